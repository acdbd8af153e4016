-- Demo schema and data loaded by `make run` through pgshard.
CREATE TABLE IF NOT EXISTS countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id bigint PRIMARY KEY, name text NOT NULL, country text, balance numeric NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS orders (id bigint NOT NULL, account_id bigint NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (account_id, id));
INSERT INTO countries VALUES ('DE','Germany'),('FR','France'),('JP','Japan'),('US','United States') ON CONFLICT DO NOTHING;
INSERT INTO accounts (id, name, country, balance)
  SELECT g, 'account ' || g, (ARRAY['DE','FR','JP','US'])[1 + g % 4], 100 FROM generate_series(1, 100) g
  ON CONFLICT DO NOTHING;
INSERT INTO orders (id, account_id, amount)
  SELECT g, 1 + g % 100, (g % 50) + 0.99 FROM generate_series(1, 500) g
  ON CONFLICT DO NOTHING;
