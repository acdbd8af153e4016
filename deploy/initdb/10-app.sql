-- Run once, when a pg* volume is first initialised, by the postgres image's
-- entrypoint: psql as POSTGRES_USER (postgres, the superuser pgshard's
-- admin_dsn uses for data moves) in POSTGRES_DB (app). It makes `app` the
-- login role clients and pgshard use, and the owner of database app (so it
-- can create tables, and pgshard's catalog schema, in its public schema).
CREATE ROLE app LOGIN PASSWORD 'app';
ALTER DATABASE app OWNER TO app;
