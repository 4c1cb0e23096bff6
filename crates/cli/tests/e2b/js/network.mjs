// The npm SDK's counterpart of tests/e2b/network.py: E2B's network
// behaviours against the fake internet of crates/cli/tests/egress.rs (run
// inside its private network namespace): egress rules, allowInternetAccess,
// updateNetwork, allowPublicTraffic and maskRequestHost through getHost
// (the port proxy at NET_PROXY, plain HTTP), and the refused 400s.
import assert from 'node:assert/strict'
import http from 'node:http'

import { Sandbox, ALL_TRAFFIC } from 'e2b'

const { NET_ALLOWED: ALLOWED, NET_DENIED: DENIED, NET_OTHER: OTHER, NET_PROXY: PROXY } = process.env
const SERVICE_PORT = Number(process.env.NET_SERVICE_PORT)
const ok = (what) => console.log('ok:', what)

// Connects from inside the sandbox; always exits 0.
const PROBE = `python3 -c "
import socket,sys
try:
  s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3); s.settimeout(3)
  print('connected', s.recv(64).decode().strip())
except OSError as e: print('failed', e)
" `
const probe = async (sbx, ip) =>
  (await sbx.commands.run(`${PROBE} ${ip} ${SERVICE_PORT}`, { timeoutMs: 30_000 })).stdout.trim()
const reaches = async (sbx, ip, what) => {
  const out = await probe(sbx, ip)
  assert.equal(out, `connected hello-from-${ip}`, `${what}: ${ip} is reachable`)
  ok(`${what}: ${ip} is reachable`)
}
const blocked = async (sbx, ip, what) => {
  const out = await probe(sbx, ip)
  assert.ok(out.startsWith('failed'), `${what}: ${ip} is not reachable (${out})`)
  ok(`${what}: ${ip} is not reachable`)
}

/** A sandbox for the length of `f`, killed whatever happened. */
async function withSandbox(opts, f) {
  const sbx = await Sandbox.create({ timeoutMs: 300_000, ...opts })
  try {
    await f(sbx)
  } finally {
    await Sandbox.kill(sbx.sandboxId).catch(() => {})
  }
}

/** GET / through the port proxy as a client of `host`: [status, body]. */
function proxied(host, headers = {}) {
  const [h, p] = [PROXY.slice(0, PROXY.lastIndexOf(':')), Number(PROXY.slice(PROXY.lastIndexOf(':') + 1))]
  return new Promise((resolve, reject) => {
    const req = http.request({ host: h, port: p, path: '/', headers: { Host: host, ...headers }, timeout: 15_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve([res.statusCode, body]))
    })
    req.on('error', reject)
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.end()
  })
}

const ECHO_HOST = `python3 -c "
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b=('host=' + self.headers.get('Host','')).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a): pass
http.server.HTTPServer(('', 8080), H).serve_forever()
" `
async function serveHostEcho(sbx) {
  await sbx.commands.run(ECHO_HOST, { background: true })
  const host = sbx.getHost(8080)
  const token = { 'e2b-traffic-access-token': sbx.trafficAccessToken ?? '' }
  for (let i = 0; i < 60; i++) {
    const [status] = await proxied(host, token).catch(() => [0])
    if (status === 200) return host
    await new Promise((f) => setTimeout(f, 300))
  }
  throw new Error('the server in the sandbox did not come up on 8080')
}

async function refused400(what, says, opts) {
  let sbx
  try {
    sbx = await Sandbox.create({ timeoutMs: 60_000, ...opts })
  } catch (e) {
    assert.ok(String(e.message).includes(says), `${what}: ${e.message}`)
    ok(`${what} is refused with a clear message (${e.message})`)
    return
  }
  await Sandbox.kill(sbx.sandboxId).catch(() => {})
  assert.fail(`${what} was accepted`)
}

await withSandbox({ network: { allowOut: [ALLOWED], denyOut: [ALL_TRAFFIC] } }, async (sbx) => {
  await reaches(sbx, ALLOWED, 'allowed address with deny-all')
  await blocked(sbx, DENIED, 'another address with deny-all')
})
await withSandbox({ network: { denyOut: [DENIED] } }, async (sbx) => {
  await blocked(sbx, DENIED, 'a denied address')
  await reaches(sbx, ALLOWED, 'an address not denied')
})
await withSandbox({ network: { denyOut: [ALL_TRAFFIC], allowOut: [ALLOWED, DENIED] } }, async (sbx) => {
  await reaches(sbx, DENIED, 'allow wins over deny-all')
  await blocked(sbx, OTHER, 'not allowed, denied')
})
await withSandbox({ allowInternetAccess: true }, async (sbx) => {
  await reaches(sbx, OTHER, 'allowInternetAccess: true')
  await sbx.updateNetwork({ denyOut: [OTHER] })
  await blocked(sbx, OTHER, 'updateNetwork denied it')
  await sbx.updateNetwork({ allowInternetAccess: false })
  await blocked(sbx, ALLOWED, 'updateNetwork allowInternetAccess: false')
  await sbx.updateNetwork({})
  await reaches(sbx, OTHER, 'updateNetwork({}) cleared the rules')
})
await withSandbox({ allowInternetAccess: false }, async (sbx) => {
  await blocked(sbx, OTHER, 'allowInternetAccess: false')
})

await withSandbox({ network: { allowPublicTraffic: false } }, async (sbx) => {
  assert.ok(sbx.trafficAccessToken); ok('a private sandbox has a traffic token')
  const host = await serveHostEcho(sbx)
  const [denied] = await proxied(host)
  assert.equal(denied, 401, `without the token: ${denied}`); ok(`without the token: ${denied}`)
  const [status] = await proxied(host, { 'e2b-traffic-access-token': sbx.trafficAccessToken })
  assert.equal(status, 200); ok('with the token: 200')
  assert.equal((await sbx.getInfo()).network?.allowPublicTraffic, false); ok('getInfo says allowPublicTraffic false')
})

const mask = 'custom-host.example.com:${PORT}'
await withSandbox({ network: { maskRequestHost: mask } }, async (sbx) => {
  const host = await serveHostEcho(sbx)
  const [status, body] = await proxied(host)
  assert.equal(status, 200)
  assert.equal(body, 'host=custom-host.example.com:8080'); ok('the server sees the masked Host, the port filled in')
  assert.equal((await sbx.getInfo()).network?.maskRequestHost, mask); ok('getInfo shows the mask')
})
await refused400('a mask that is no host', 'maskRequestHost', { network: { maskRequestHost: 'bad host/${PORT}' } })
await refused400('network.rules transforms', 'network.rules', {
  network: { allowOut: ['api.example.com'], rules: { 'api.example.com': [{ transform: { headers: { 'X-Test': '1' } } }] } },
})
console.log('network.mjs: all checks passed')
