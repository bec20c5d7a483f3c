// Serve this package's files and proxy /api/ to a running daemon, so the example page
// and the stream share one origin (the daemon sends no CORS headers):
//
//   node examples/serve.mjs --daemon http://127.0.0.1:8080 --port 8081
//   open http://127.0.0.1:8081/examples/trade-form.html

import { readFile } from 'node:fs/promises'
import { request, createServer } from 'node:http'
import { extname, normalize, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: { daemon: { type: 'string', default: 'http://127.0.0.1:8080' }, port: { type: 'string', default: '8081' } },
})
const root = fileURLToPath(new URL('..', import.meta.url))
const daemon = new URL(values.daemon)
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8' }

createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname
  if (path.startsWith('/api/')) {
    const upstream = request(
      { host: daemon.hostname, port: daemon.port || 80, path: req.url, method: req.method, headers: { ...req.headers, host: daemon.host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      },
    )
    upstream.on('error', (err) => {
      res.writeHead(502, { 'Content-Type': 'text/plain' })
      res.end(`daemon unreachable: ${err.message}\n`)
    })
    res.on('close', () => upstream.destroy()) // the browser went away: end the stream upstream too
    req.pipe(upstream)
    return
  }
  const file = normalize(root + path)
  const allowed = [`${root}examples${sep}`, `${root}src${sep}`].some((dir) => file.startsWith(dir))
  try {
    if (!allowed || !(extname(file) in types)) throw new Error('not served')
    const body = await readFile(file)
    res.writeHead(200, { 'Content-Type': types[extname(file)], 'Cache-Control': 'no-cache' })
    res.end(body)
  } catch {
    res.writeHead(404, { 'Content-Type': 'text/plain' })
    res.end('not found\n')
  }
}).listen(Number(values.port), '127.0.0.1', () => {
  console.log(`http://127.0.0.1:${values.port}/examples/trade-form.html (daemon ${daemon.origin})`)
})
