-- Cross-shard merge corpus (cmd/internal/e2e/merge_test.go): one query a line;
-- a trailing comment tags it: refuse (0A000 expected), ordered (compare in order), count (row count only).
select count(*) from accounts
select count(*) from accounts where balance < 0
select count(*) from accounts where id < -5000000
select count(balance) from accounts
select count(balance) from accounts where balance < 0
select count(balance) from accounts where id < -5000000
select count(name) from accounts
select count(name) from accounts where balance < 0
select count(name) from accounts where id < -5000000
select sum(balance) from accounts
select sum(balance) from accounts where balance < 0
select sum(balance) from accounts where id < -5000000
select sum(score) from accounts
select sum(score) from accounts where balance < 0
select sum(score) from accounts where id < -5000000
select sum(ratio) from accounts
select sum(ratio) from accounts where balance < 0
select sum(ratio) from accounts where id < -5000000
select min(balance) from accounts
select min(balance) from accounts where balance < 0
select min(balance) from accounts where id < -5000000
select max(balance) from accounts
select max(balance) from accounts where balance < 0
select max(balance) from accounts where id < -5000000
select min(name) from accounts
select min(name) from accounts where balance < 0
select min(name) from accounts where id < -5000000
select max(name) from accounts
select max(name) from accounts where balance < 0
select max(name) from accounts where id < -5000000
select avg(balance) from accounts
select avg(balance) from accounts where balance < 0
select avg(balance) from accounts where id < -5000000
select avg(score) from accounts
select avg(score) from accounts where balance < 0
select avg(score) from accounts where id < -5000000
select avg(ratio) from accounts
select avg(ratio) from accounts where balance < 0
select avg(ratio) from accounts where id < -5000000
select bool_and(active) from accounts
select bool_and(active) from accounts where balance < 0
select bool_and(active) from accounts where id < -5000000
select bool_or(active) from accounts
select bool_or(active) from accounts where balance < 0
select bool_or(active) from accounts where id < -5000000
select every(active) from accounts
select every(active) from accounts where balance < 0
select every(active) from accounts where id < -5000000
select min(created) from accounts
select min(created) from accounts where balance < 0
select min(created) from accounts where id < -5000000
select max(created) from accounts
select max(created) from accounts where balance < 0
select max(created) from accounts where id < -5000000
select min(score) from accounts
select min(score) from accounts where balance < 0
select min(score) from accounts where id < -5000000
select max(ratio) from accounts
select max(ratio) from accounts where balance < 0
select max(ratio) from accounts where id < -5000000
select avg(id) from accounts
select avg(id) from accounts where balance < 0
select avg(id) from accounts where id < -5000000
select sum(id) from accounts
select sum(id) from accounts where balance < 0
select sum(id) from accounts where id < -5000000
select count(*) from orders
select status, count(*) from orders group by status order by status nulls first -- ordered
select sum(amount) from orders
select status, sum(amount) from orders group by status order by status nulls first -- ordered
select avg(amount) from orders
select status, avg(amount) from orders group by status order by status nulls first -- ordered
select min(amount) from orders
select status, min(amount) from orders group by status order by status nulls first -- ordered
select max(qty) from orders
select status, max(qty) from orders group by status order by status nulls first -- ordered
select sum(qty) from orders
select status, sum(qty) from orders group by status order by status nulls first -- ordered
select avg(qty) from orders
select status, avg(qty) from orders group by status order by status nulls first -- ordered
select min(created) from orders
select status, min(created) from orders group by status order by status nulls first -- ordered
select max(status) from orders
select status, max(status) from orders group by status order by status nulls first -- ordered
select count(*), sum(age), avg(age), min(age), max(email) from users
select email, count(*) from users group by email
select count(*) from users having count(*) > 0
select count(*) from accounts having count(*) > 0
select count(*) from accounts having count(*) > 1000
select region, count(*), sum(balance), avg(balance), min(score), max(ratio) from accounts group by region
select region, count(*) from accounts group by region order by count(*) desc, region nulls first
select active, count(*), sum(balance), avg(balance), min(score), max(ratio) from accounts group by active
select active, count(*) from accounts group by active order by count(*) desc, active nulls first
select created, count(*), sum(balance), avg(balance), min(score), max(ratio) from accounts group by created
select created, count(*) from accounts group by created order by count(*) desc, created nulls first
select name, count(*), sum(balance), avg(balance), min(score), max(ratio) from accounts group by name
select name, count(*) from accounts group by name order by count(*) desc, name nulls first
select balance % 3, count(*), sum(balance), avg(balance), min(score), max(ratio) from accounts group by balance % 3
select balance % 3, count(*) from accounts group by balance % 3 order by count(*) desc, balance % 3 nulls first
select region, active, count(*), sum(balance), avg(balance), min(score), max(ratio) from accounts group by region, active
select region, active, count(*) from accounts group by region, active order by count(*) desc, region nulls first
select active, region, count(*), sum(balance), avg(balance), min(score), max(ratio) from accounts group by active, region
select active, region, count(*) from accounts group by active, region order by count(*) desc, active nulls first
select region, count(*), avg(score) from accounts group by region order by 1 -- ordered
select region, sum(balance) as s from accounts group by region order by 1 limit 3 -- ordered
select region, count(*), avg(score) from accounts group by region order by region desc -- ordered
select region, sum(balance) as s from accounts group by region order by region desc limit 3 -- ordered
select region, count(*), avg(score) from accounts group by region order by region nulls first -- ordered
select region, sum(balance) as s from accounts group by region order by region nulls first limit 3 -- ordered
select active, count(*), avg(score) from accounts group by active order by active desc nulls last -- ordered
select active, sum(balance) as s from accounts group by active order by active desc nulls last limit 3 -- ordered
select created, count(*), avg(score) from accounts group by created order by created -- ordered
select created, sum(balance) as s from accounts group by created order by created limit 3 -- ordered
select region, active, count(*), avg(score) from accounts group by region, active order by region, active -- ordered
select region, active, sum(balance) as s from accounts group by region, active order by region, active limit 3 -- ordered
select region, count(*) from accounts group by 1 order by 1 -- ordered
select count(*) from accounts group by region
select sum(balance) from accounts group by region, active
select region, count(*) c from accounts group by region order by c, region -- ordered
select region, avg(balance) a from accounts group by region order by a desc nulls last -- ordered
select region, min(name), max(name) from accounts group by region order by region -- ordered
select region, count(*) from accounts group by region order by max(balance) desc, region -- ordered
select region, count(*) from accounts group by region order by avg(ratio), region -- ordered
select region, count(*) from accounts group by region order by sum(score) desc nulls first -- ordered
select region from accounts group by region order by count(*), region -- ordered
select region, count(*) from accounts group by region order by min(name), region -- ordered
select region, count(*) from accounts group by region having count(*) > 50
select region, count(*) from accounts group by region having count(*) > 50 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having count(*) >= 60 and sum(balance) < 0
select region, count(*) from accounts group by region having count(*) >= 60 and sum(balance) < 0 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having sum(balance) > 0 or min(balance) < -990
select region, count(*) from accounts group by region having sum(balance) > 0 or min(balance) < -990 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having avg(balance) > 0
select region, count(*) from accounts group by region having avg(balance) > 0 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having avg(score) < 0
select region, count(*) from accounts group by region having avg(score) < 0 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having max(name) = 'n210'
select region, count(*) from accounts group by region having max(name) = 'n210' order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having not (count(*) > 55)
select region, count(*) from accounts group by region having not (count(*) > 55) order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having sum(ratio) is not null
select region, count(*) from accounts group by region having sum(ratio) is not null order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having min(balance) is null
select region, count(*) from accounts group by region having min(balance) is null order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having count(*) <> 60
select region, count(*) from accounts group by region having count(*) <> 60 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having avg(ratio) > 0.5
select region, count(*) from accounts group by region having avg(ratio) > 0.5 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having sum(score) > 100.5
select region, count(*) from accounts group by region having sum(score) > 100.5 order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having region is not null
select region, count(*) from accounts group by region having region is not null order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having region <> 'north'
select region, count(*) from accounts group by region having region <> 'north' order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having max(created) >= '2023-12-01'
select region, count(*) from accounts group by region having max(created) >= '2023-12-01' order by region limit 2 offset 1 -- ordered
select region, count(*) from accounts group by region having bool_or(active)
select region, count(*) from accounts group by region having bool_or(active) order by region limit 2 offset 1 -- ordered
select id, id from accounts order by id, id limit 15 -- ordered
select id, id from accounts order by id desc, id limit 15 -- ordered
select id, id from accounts order by id nulls first, id limit 15 -- ordered
select id, id from accounts order by id desc nulls last, id limit 15 -- ordered
select id, name from accounts order by name, id limit 15 -- ordered
select id, name from accounts order by name desc, id limit 15 -- ordered
select id, name from accounts order by name nulls first, id limit 15 -- ordered
select id, name from accounts order by name desc nulls last, id limit 15 -- ordered
select id, region from accounts order by region, id limit 15 -- ordered
select id, region from accounts order by region desc, id limit 15 -- ordered
select id, region from accounts order by region nulls first, id limit 15 -- ordered
select id, region from accounts order by region desc nulls last, id limit 15 -- ordered
select id, balance from accounts order by balance, id limit 15 -- ordered
select id, balance from accounts order by balance desc, id limit 15 -- ordered
select id, balance from accounts order by balance nulls first, id limit 15 -- ordered
select id, balance from accounts order by balance desc nulls last, id limit 15 -- ordered
select id, score from accounts order by score, id limit 15 -- ordered
select id, score from accounts order by score desc, id limit 15 -- ordered
select id, score from accounts order by score nulls first, id limit 15 -- ordered
select id, score from accounts order by score desc nulls last, id limit 15 -- ordered
select id, ratio from accounts order by ratio, id limit 15 -- ordered
select id, ratio from accounts order by ratio desc, id limit 15 -- ordered
select id, ratio from accounts order by ratio nulls first, id limit 15 -- ordered
select id, ratio from accounts order by ratio desc nulls last, id limit 15 -- ordered
select id, active from accounts order by active, id limit 15 -- ordered
select id, active from accounts order by active desc, id limit 15 -- ordered
select id, active from accounts order by active nulls first, id limit 15 -- ordered
select id, active from accounts order by active desc nulls last, id limit 15 -- ordered
select id, created from accounts order by created, id limit 15 -- ordered
select id, created from accounts order by created desc, id limit 15 -- ordered
select id, created from accounts order by created nulls first, id limit 15 -- ordered
select id, created from accounts order by created desc nulls last, id limit 15 -- ordered
select id from accounts order by balance, score desc, id -- ordered
select id, name from accounts order by lower(name) desc, id -- ordered
select id from accounts order by balance * 2 + 1, id limit 7 -- ordered
select name from accounts order by id desc limit 5 -- ordered
select * from accounts order by id limit 10 -- ordered
select * from accounts order by created, id offset 290 -- ordered
select id from accounts order by id limit 0 -- ordered
select id from accounts order by id offset 1000 -- ordered
select id from accounts order by id limit 5 offset 298 -- ordered
select id from accounts order by 1 desc limit 3 -- ordered
select id as x from accounts order by x limit 3 -- ordered
select id from accounts order by name collate "C", id limit 9 -- ordered
select id from accounts order by name collate "und-x-icu", id limit 9 -- refuse
select id from accounts limit 10 -- count
select id from accounts limit 0 -- count
select id from accounts offset 295 -- count
select id from accounts limit all
select id from accounts fetch first 3 rows only -- count
select id from accounts order by region fetch first 3 rows with ties -- refuse
select o.id, a.name from accounts a join orders o on o.account_id = a.id order by o.amount desc nulls last, o.account_id, o.id limit 12 -- ordered
select a.region, count(o.id), sum(o.amount) from accounts a join orders o on o.account_id = a.id group by a.region order by a.region -- ordered
select a.id, count(o.id) from accounts a left join orders o on o.account_id = a.id group by a.id order by 2 desc, 1 limit 10 -- ordered
select c.name, count(*) from accounts a join countries c on c.code = a.region group by c.name order by c.name -- ordered
select a.id, c.name from accounts a join countries c on c.code = a.region order by c.name, a.id limit 20 -- ordered
select count(*) from accounts a join orders o on o.account_id = a.id where o.qty > 0
select a.id, (select count(*) from orders o where o.account_id = a.id) n from accounts a order by n desc, a.id limit 5 -- ordered
select count(distinct o.account_id) from orders o
select count(distinct a.id), count(*) from accounts a join orders o on o.account_id = a.id
select region, count(distinct id) from accounts group by region order by region -- ordered
select count(distinct name) from accounts
select sum(distinct balance) from accounts -- refuse
select max(distinct balance) from accounts
select distinct region from accounts
select distinct region from accounts order by region
select distinct active from accounts
select distinct active from accounts order by active
select distinct region, active from accounts
select distinct region, active from accounts order by region, active
select distinct name from accounts
select distinct name from accounts order by name
select distinct balance from accounts
select distinct balance from accounts order by balance
select distinct score from accounts
select distinct score from accounts order by score
select distinct ratio from accounts
select distinct ratio from accounts order by ratio
select distinct created from accounts
select distinct created from accounts order by created
select distinct region, created from accounts
select distinct region, created from accounts order by region, created
select distinct region from accounts order by region limit 2 -- ordered
select distinct status from orders order by status nulls first -- ordered
select distinct region, count(*) from accounts group by region, active
select distinct on (region) region, id from accounts order by region, id -- refuse
select distinct region from accounts order by balance
select string_agg(name, ',') from accounts -- refuse
select array_agg(id) from accounts -- refuse
select sum(balance) + 1 from accounts
select coalesce(sum(balance), 0) from accounts
select region, rank() over (order by region) from accounts -- refuse
select account_id, id, row_number() over (partition by account_id order by id) from orders
select account_id, id, amount, sum(amount) over (partition by account_id order by id) from orders
select * from (select account_id, id, amount, row_number() over (partition by account_id order by amount desc, id) rn from orders) x where rn = 1
select account_id, id, rank() over w, lag(amount) over w, first_value(id) over (w rows between unbounded preceding and unbounded following) from orders window w as (partition by account_id order by id)
select account_id, id, count(*) over (partition by account_id) from orders order by account_id, id limit 20 -- ordered
select id, name, row_number() over (partition by id) from accounts order by id desc limit 5 -- ordered
select o.account_id, o.id, sum(o.amount) over (partition by a.id, o.status) from accounts a join orders o on o.account_id = a.id
select account_id, id from orders order by row_number() over (partition by account_id order by id), account_id, id limit 10 -- ordered
select distinct account_id, count(*) over (partition by account_id) from orders
select count(*), sum(amount) from (select account_id, amount, row_number() over (partition by account_id order by id) rn from orders) x where rn <= 2
select rn, count(*) from (select row_number() over (partition by account_id order by id desc) rn from orders) x group by rn order by rn -- ordered
select a.id, (select max(x.rn) from (select row_number() over (partition by account_id) rn from orders o where o.account_id = a.id) x) from accounts a
select c.code, o.id from countries c left join orders o on o.status = c.code -- refuse
select c.code, count(o.id) from orders o right join countries c on c.code = o.status group by c.code -- refuse
select c.code, a.id from countries c left join accounts a on a.region = c.code where a.id in (-992081, -984162)
select a.id, c.name from accounts a left join countries c on c.code = a.region
select v.k, a.name, o.id from (values (-976243), (-960405), (-936648), (7)) v(k) join accounts a on a.id = v.k join orders o on o.account_id = v.k
select account_id, sum(amount), rank() over (partition by account_id order by sum(amount)) from orders group by account_id -- refuse
select account_id, id, row_number() over (partition by status order by id) from orders -- refuse
select account_id, id, row_number() over (partition by account_id + 0 order by id) from orders -- refuse
select o.id, row_number() over (partition by o.qty) from accounts a join orders o on o.account_id = a.id -- refuse
select stddev(balance) from accounts -- refuse
select region, count(*) from accounts group by rollup(region) -- refuse
select id from accounts union select account_id from orders order by 1 -- refuse
select region, count(*) from accounts group by region having count(*) + 1 > 5
select id from accounts order by random() limit 3 -- count
select id from accounts order by id limit (select 3) -- refuse
select percentile_cont(0.5) within group (order by balance) from accounts -- refuse
select count(*) filter (where active), sum(balance) filter (where balance > 0), avg(score) filter (where region = 'east') from accounts
select region, count(*) filter (where active) from accounts group by region order by region -- ordered
select count(*) from accounts where id in (-992081, -984162, -976243)
select id, name from accounts where id in (-992081, -984162, -976243) order by name, id -- ordered
select sum(balance), count(*) from accounts where id = any(array[-992081, -984162]::bigint[])
select count(*), avg(balance) from accounts where region = 'north' and balance > -100
select max(balance) - min(balance) from accounts
select avg(balance::float8), avg(balance::numeric) from accounts
select avg(ratio::real) from accounts -- refuse
select sum(balance::smallint), sum(balance::bigint), avg(balance::smallint) from accounts
select avg(qty) from orders where qty < 0
select region, avg(qty) from accounts a join orders o on o.account_id = a.id group by region order by region -- ordered
select 1 as one, count(*) from accounts
select count(1) from accounts
select count(*) as n from accounts where false
select min(id), max(id) from accounts where false
select region, count(*) from accounts where false group by region
select id from accounts where false order by id limit 3 -- ordered
-- Collations (people.nick "en-x-icu", people.tag nondeterministic ICU, people.code "C"): the merge compares text byte by byte.
select nick from people order by nick -- refuse
select id, nick from people order by nick desc, id -- refuse
select id, nick from people order by nick collate "C", id -- ordered
select id, nick from people order by nick collate "C" desc, id limit 7 -- ordered
select min(nick), max(nick) from people -- refuse
select min(nick collate "C"), max(nick collate "C") from people
select lower(nick) from people order by 1 -- refuse
select lower(nick) from people order by lower(nick) collate "C", id -- ordered
select distinct nick from people
select nick, count(*) from people group by nick
select lower(nick), count(*) from people group by 1
select distinct lower(nick) from people
select nick, count(*) from people group by nick having nick = 'Bob'
select nick, count(*) from people group by nick having nick > 'm' -- refuse
select nick, count(*) from people group by nick order by nick -- refuse
select tag, count(*) from people group by tag -- refuse
select distinct tag from people -- refuse
select distinct upper(tag) from people -- refuse
select count(*) from people group by tag collate "C"
select distinct * from people -- refuse
select code from people order by code, id -- ordered
select upper(code) from people order by 1, id -- ordered
select max(code), min(upper(code)) from people
select distinct code from people order by code -- ordered
select * from people order by code, id limit 5 -- ordered
select code, count(*) from people group by code having min(code) > 'a' order by code -- ordered
-- A user-defined aggregate looks like a function in the parse tree: the proxy asks pg_proc and refuses it; a user function is fine.
select my_total(balance) from accounts -- refuse
select my_total(balance) from accounts order by 1 -- refuse
select region, my_total(balance) from accounts group by region -- refuse
select id from accounts where balance > (select my_total(qty) from orders where orders.account_id = accounts.id) -- refuse
select twice(balance) from accounts
select region, sum(twice(balance)) from accounts group by region
select max(twice(balance)) from accounts
-- Expressions over aggregates: the shards send the aggregates, one shard evaluates the expression on the combined values.
select coalesce(sum(balance), 0) from accounts where balance > 100000
select coalesce(sum(amount), 0.00) as total from orders where qty > 100
select region, coalesce(sum(balance), 0) as total from accounts group by region
select region, sum(balance) / count(*) from accounts group by region
select region, sum(score) / nullif(count(score), 0) from accounts group by region
select region, round(avg(score), 2) as mean from accounts group by region order by mean desc nulls last, region -- ordered
select region, coalesce(sum(balance), 0) total from accounts group by region order by total desc, region -- ordered
select region, coalesce(sum(balance), 0) total from accounts group by region order by 2, 1 limit 2 -- ordered
select status, sum(amount)::numeric(14,1), count(*)::text || ' orders' from orders group by status
select account_id, sum(qty) * 2 as q from orders group by account_id having sum(qty) > 3 order by q desc, account_id limit 5 -- ordered
select region, case when count(*) > 50 then 'big' else 'small' end as size from accounts group by region
select region || ':' || count(*) from accounts group by region
select region, greatest(max(balance), 0), least(min(balance), 0) from accounts group by region
select active, bool_and(balance > 0) or count(*) > 100 from accounts group by active
select extract(month from created) m, sum(balance) - avg(balance) from accounts group by 1
select max(created) - min(created), max(created) + 1 from accounts
select sum(ratio) / 2, avg(ratio) * 4 from accounts
select sum(balance) filter (where active) - sum(balance) filter (where not active) from accounts
select count(*) filter (where balance > 0)::float8 / count(*) from accounts
select region, twice(count(*)::int) from accounts group by region
select sum(balance) / 0 from accounts
select region, max(name) || '!' from accounts group by region
select count(*) + 0, coalesce(sum(age), -1), coalesce(max(email), 'none') from users
select coalesce(sum(balance), 0) + coalesce(sum(score), 0) as s, count(*) - count(balance) as nulls from accounts
select region, sum(balance) * 1.5 as w from accounts group by region having count(*) > 1 order by w, region -- ordered
select region, count(*) * 100.0 / sum(count(*)) over () from accounts group by region -- refuse
select region, sum(balance) + (select 1) from accounts group by region -- refuse
select region, sum(balance) + random() from accounts group by region -- refuse
select count(*) + id from accounts
select distinct count(*) % 2 from accounts group by region
select region, case when count(*) > 1 then region else 'x' end from accounts group by region
select region, case when count(*) > 1 then 'y' else region end from accounts group by region
select nullif(count(*), 0), greatest(count(*), 1), least(sum(balance), 0), (count(*) > 0)::int, count(*)::text::varchar from accounts
select coalesce(max(status), 'none') || '/' || count(*) from orders where qty > 1000
-- HAVING beyond comparisons of aggregates: evaluated by a shard on the combined groups.
select region, sum(balance) from accounts group by region having coalesce(sum(balance), 0) > 0 order by region -- ordered
select region from accounts group by region having sum(balance) / count(*) > -10 and region is not null
select account_id, count(*) from orders group by account_id having sum(qty) * 2 > avg(qty) + 10 order by 1 limit 5 -- ordered
select region, round(avg(score), 1) from accounts group by region having abs(sum(balance)) > 100 or count(*) < 2
select count(*) from accounts having sum(balance) / 0 > 1
select count(*) from users having coalesce(max(age), 0) = 0
select region, count(*) from accounts group by region having count(*) > (select 5) -- refuse
-- GROUP BY an output name: grouped by that column once no FROM table has a column of the name (Postgres prefers the input column: refused then).
select date_trunc('month', created) as month, count(*), sum(amount) from orders group by month order by month -- ordered
select extract(month from created) m, sum(balance) - avg(balance) from accounts group by m
select region as r, count(*) from accounts group by r order by r -- ordered
select a.region as reg, count(o.id), coalesce(sum(o.amount), 0) from accounts a join orders o on o.account_id = a.id group by reg
select lower(name) as name, count(*) from accounts group by name -- refuse
with x as (select * from accounts) select region as r, count(*) from x group by r -- refuse
-- Review cases: HAVING first (no division by zero for the groups it leaves out), no leftovers of a HAVING the proxy gave up on, grouped expressions kept whole, DISTINCT over expressions, collations.
select active, sum(balance) / (count(*) - 100) from accounts group by active having count(*) - 100 <> 0 and coalesce(sum(balance), 0) <> 0
select region, sum(balance) / count(*) from accounts group by region having region <> 'east' and 100 / (case when region = 'east' then 0 else 1 end) > coalesce(sum(balance), 0) / 1000
select lower(region) || ':' || count(*) from accounts group by lower(region)
select upper(region), upper(region) || count(*) from accounts group by 1
select distinct sum(balance) / count(balance) > 0 from accounts group by region
select max(code) < 'a', max(code) from people -- refuse
select count(*) from accounts having sum(balance)
select current_date - max(created) > 0, current_user = min(name) from accounts
select account_id, sum(qty) * 2 as q from orders o(account_id, id, amount, qty, status, created) group by account_id order by q desc, account_id limit 3 -- ordered
select q * 2 as q, count(*) from orders o(a, b, c, q) group by q -- refuse
select id, length(repeat(max(name), 3000) || count(*)) from accounts group by id
select region, left(max(repeat(coalesce(name, 'x'), 20000)), 3) || count(*), length(max(repeat(coalesce(name, 'x'), 20000))) from accounts group by region
-- ORDER BY an expression over aggregates that is not selected: a hidden expression column.
select region from accounts group by region order by sum(balance) / count(*) desc nulls last, region -- ordered
select region, count(*) from accounts group by region order by coalesce(sum(balance), 0) limit 2 -- ordered
select status from orders group by status order by min(status) || '!' nulls first -- ordered
select account_id from orders group by account_id order by sum(qty) * 2 - count(*) desc, account_id limit 4 offset 2 -- ordered
select region from accounts group by region order by sum(balance) + random() -- refuse
-- count(DISTINCT x) of a non-key x: the shards group by x too, the proxy counts the distinct values.
select region, count(distinct name), count(*), sum(balance) from accounts group by region
select count(distinct lower(name)), count(distinct region), count(distinct active) from accounts
select region, count(distinct status) from accounts a join orders o on o.account_id = a.id group by region
select count(distinct name) filter (where active) from accounts
select region from accounts group by region having count(distinct name) > 50 order by 1 -- ordered
select region, count(distinct name) * 100 / count(*) from accounts group by region
select region, count(distinct name) from accounts group by region order by count(distinct name) desc, region -- ordered
select count(distinct name) from accounts where id < -5000000
select count(distinct created), count(distinct score), count(distinct ratio) from accounts
select count(distinct tag) from people -- refuse
select count(distinct nick), count(distinct code) from people
select count(distinct email) from users
select avg(distinct balance) from accounts -- refuse
-- GROUP BY a float, visible (binary in the extended protocol) and hidden: the key check of a float column read a value it did not have (a panic).
select ratio, count(*) from accounts group by ratio
select count(*), sum(balance) from accounts group by score::float8
-- Review cases of count(DISTINCT x): HAVING forms the proxy gives up on, ungrouped columns (42803 as in Postgres), no rows, constants, FILTER with a key and a non-key.
select region, count(*) from accounts group by region having count(distinct name) > 1 and region like 'n%'
select region, count(*) from accounts group by region having count(distinct name) > 1 and count(*) % 2 = 0
select count(*) from accounts having count(distinct name) > 1 and true
select name, count(distinct name) from accounts
select 'n', count(distinct name), now() is not null from accounts where false
select count(distinct 1), count(distinct 'a') from accounts
select count(distinct id) filter (where active), count(distinct name) filter (where balance > 0) from accounts
select region, count(distinct name) from accounts group by region order by name
