// node-postgres (pg 8.x) checks run through pgshard by the e2e test
// TestNodePostgres. Usage:
//
//	PGSHARD_DSN=postgres://app:app@127.0.0.1:6432/app?sslmode=disable node check.js
//
// Every check prints PASS or FAIL with its reason; the exit status is 1 if
// any check failed.
'use strict'

const { pipeline } = require('node:stream/promises')
const { Readable, Writable } = require('node:stream')
const pg = require('pg')
const { from: copyFrom, to: copyTo } = require('pg-copy-streams')

const dsn = process.env.PGSHARD_DSN || process.argv[2]
if (!dsn) {
  console.error('usage: PGSHARD_DSN=postgres://user:pass@host:port/db node check.js')
  process.exit(2)
}
const table = 'node_t'
const transactions = 150

let failures = 0

async function check(name, fn) {
  const start = Date.now()
  try {
    await fn()
    console.log(`PASS ${name} (${Date.now() - start} ms)`)
  } catch (e) {
    failures++
    console.log(`FAIL ${name}: ${(e && e.stack) || e}`)
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function connect(connectionString = dsn) {
  const c = new pg.Client({ connectionString })
  await c.connect()
  return c
}

// expectError runs fn and returns the error it raises, failing if it
// succeeds or raises one without the SQLSTATE code.
async function expectError(fn, code) {
  try {
    await fn()
  } catch (e) {
    assert(e.code === code, `want SQLSTATE ${code}, got ${e.code}: ${e.message}`)
    return e
  }
  throw new Error(`want SQLSTATE ${code}, got success`)
}

// churn keeps other clients busy so that, with a pool of 2 server
// connections, a client's transactions land on different server connections.
function churn(n) {
  let stopped = false
  const clients = []
  const loops = []
  for (let i = 0; i < n; i++) {
    loops.push(
      (async () => {
        const c = await connect()
        clients.push(c)
        while (!stopped) await c.query('select pg_backend_pid()')
        await c.end()
      })()
    )
  }
  return async () => {
    stopped = true
    await Promise.all(loops)
  }
}

async function main() {
  let client
  await check('connect with SCRAM', async () => {
    client = await connect()
    const u = new URL(dsn)
    u.password = 'wrong-password'
    await expectError(() => connect(u.toString()), '28P01')
  })
  if (!client) {
    process.exit(1)
  }

  await check('bound parameters', async () => {
    const r = await client.query('select $1::int + $2::int as sum, $3::text as t', [40, 2, 'héllo'])
    assert(r.rows[0].sum === 42 && r.rows[0].t === 'héllo', `got ${JSON.stringify(r.rows)}`)
    await client.query(`drop table if exists ${table}`)
    await client.query(`create table ${table} (id int primary key, v text)`)
  })

  await check(`named prepared statement reused across ${transactions} transactions`, async () => {
    const stop = churn(2)
    const pids = new Set()
    try {
      for (let i = 0; i < transactions; i++) {
        await client.query('begin')
        // A query config with a name is a named statement: node-postgres
        // sends Parse once per connection, then only Bind/Execute.
        await client.query({ name: 'node_ins', text: `insert into ${table} values ($1, $2)`, values: [i, `v${i}`] })
        const r = await client.query({ name: 'node_pid', text: 'select pg_backend_pid() as pid' })
        pids.add(r.rows[0].pid)
        await client.query('commit')
      }
    } finally {
      await stop()
    }
    const r = await client.query(`select count(*)::int as n from ${table}`)
    assert(r.rows[0].n === transactions, `want ${transactions} rows, got ${r.rows[0].n}`)
    assert(pids.size >= 2, `transactions ran on ${pids.size} server backend(s), want several`)
    console.log(`  transactions ran on ${pids.size} server backends`)
  })

  await check('COPY in and out', async () => {
    const lines = []
    for (let i = 1000; i < 3000; i++) lines.push(`${i}\tc${i}\n`)
    const ins = client.query(copyFrom(`copy ${table} (id, v) from stdin`))
    await pipeline(Readable.from(lines), ins)
    assert(ins.rowCount === 2000, `copy from: rowCount ${ins.rowCount}`)

    const chunks = []
    const out = client.query(copyTo(`copy (select id, v from ${table} where id >= 1000 order by id) to stdout`))
    await pipeline(
      out,
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk)
          cb()
        },
      })
    )
    const text = Buffer.concat(chunks).toString()
    assert(text === lines.join(''), `copy to: ${text.split('\n').length - 1} lines, starts ${JSON.stringify(text.slice(0, 20))}`)

    // A bad row fails the COPY with 22P02 and the connection stays usable.
    const bad = client.query(copyFrom(`copy ${table} from stdin`))
    await expectError(() => pipeline(Readable.from(['5000\tok\n', 'not-a-number\tbad\n']), bad), '22P02')
    const r = await client.query(`select count(*)::int as n from ${table} where id = 5000`)
    assert(r.rows[0].n === 0, `after bad copy: ${r.rows[0].n} rows`)
  })

  await check('syntax error then good query', async () => {
    await expectError(() => client.query('selec 1'), '42601')
    let r = await client.query('select 1 as one')
    assert(r.rows[0].one === 1, 'simple query after the error')
    // The same through the extended protocol (Parse fails).
    await expectError(() => client.query('selec $1::int', [1]), '42601')
    r = await client.query('select $1::int as one', [1])
    assert(r.rows[0].one === 1, 'extended query after the error')
  })

  await check('cancel (CancelRequest) of pg_sleep(10)', async () => {
    const q = new pg.Query('select pg_sleep(10)')
    const done = new Promise((resolve) => {
      q.on('error', (e) => resolve(e))
      q.on('end', () => resolve(null))
    })
    const start = Date.now()
    client.query(q)
    await sleep(200)
    // Client#cancel opens a new connection and sends a CancelRequest with
    // the BackendKeyData the target client received. (pg 8.x prints a
    // DeprecationWarning about Client.activeQuery from inside cancel.)
    new pg.Client({ connectionString: dsn }).cancel(client, q)
    const err = await done
    const elapsed = Date.now() - start
    assert(err, 'pg_sleep(10) was not cancelled')
    assert(err.code === '57014', `want 57014, got ${err.code}: ${err.message}`)
    assert(elapsed < 1000, `cancel took ${elapsed} ms`)
    const r = await client.query('select 1 as one')
    assert(r.rows[0].one === 1, 'connection unusable after cancel')
  })

  await check('cleanup', async () => {
    await client.query(`drop table if exists ${table}`)
    await client.end()
  })
}

main()
  .catch((e) => {
    failures++
    console.log(`FAIL unexpected: ${(e && e.stack) || e}`)
  })
  .finally(() => {
    console.log(failures ? `${failures} check(s) failed` : 'all checks passed')
    process.exit(failures ? 1 : 0)
  })
