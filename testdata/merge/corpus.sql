-- Cross-shard merge corpus (cmd/internal/e2e/merge_test.go). One query a line.
select count(*) from accounts
select count(*), sum(balance), min(balance), max(balance), avg(balance) from accounts
select region, count(*) from accounts group by region
select region, count(*), sum(balance) from accounts group by region order by region -- ordered
select id, name from accounts order by id limit 10 -- ordered
select id, name from accounts order by name desc nulls last, id limit 20 offset 5 -- ordered
select avg(score), avg(ratio), sum(score), sum(ratio) from accounts
select count(distinct id) from accounts
select count(distinct region) from accounts -- refuse
select distinct region from accounts
select count(*), sum(age), avg(age), max(age) from users
