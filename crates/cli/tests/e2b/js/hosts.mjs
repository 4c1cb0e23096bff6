// The npm SDK reaching sandboxes as it does on E2B: over HTTPS by host name
// through dwell's TLS port proxy, without E2B_SANDBOX_URL or E2B_API_URL
// (run by crates/cli/tests/e2b.rs with E2B_DOMAIN=DOMAIN:PORT and
// NODE_EXTRA_CA_CERTS naming the test's CA). Names under DOMAIN exist in no
// DNS: this process answers them with 127.0.0.1 itself (dns.lookup, which
// Node's sockets use), so TLS still sees the real host names.
import assert from 'node:assert/strict'
import dns from 'node:dns'

const domainPort = process.env.E2B_DOMAIN
const domain = domainPort.slice(0, domainPort.lastIndexOf(':'))
for (const v of ['E2B_SANDBOX_URL', 'E2B_API_URL']) {
  if (process.env[v]) throw new Error(`${v} is set: this scenario is about reaching dwell without it`)
}
const lookup = dns.lookup
dns.lookup = function (host, opts, cb) {
  if (host === domain || host.endsWith('.' + domain)) host = '127.0.0.1'
  return lookup.call(this, host, opts, cb)
}

const { Sandbox, TimeoutError } = await import('e2b')
const ok = (what) => console.log('ok:', what)
const base = (label) => `https://${label}.${domainPort}`

const sbx = await Sandbox.create({ timeoutMs: 300_000 })
try {
  assert.equal(sbx.sandboxDomain, domainPort); ok('the domain reported is the proxy\'s')
  const r = await sbx.commands.run('echo over-tls')
  assert.equal(r.stdout, 'over-tls\n'); ok('commands.run over https')
  await sbx.files.write('/tmp/tls.txt', 'hello tls')
  assert.equal(await sbx.files.read('/tmp/tls.txt'), 'hello tls'); ok('files over https')
  const cmd = await sbx.commands.run('cd /tmp && python3 -m http.server 8001', { background: true })
  const url = `https://${sbx.getHost(8001)}/tls.txt`
  assert.equal(url, base(`8001-${sbx.sandboxId}`) + '/tls.txt'); ok('getHost names the proxy')
  let res
  for (let i = 0; i < 60; i++) {
    res = await fetch(url).catch(() => undefined)
    if (res?.status === 200) break
    await new Promise((f) => setTimeout(f, 500))
  }
  assert.equal(res?.status, 200); ok('getHost(8001) answers over https')
  assert.equal(await res.text(), 'hello tls'); ok('the server\'s file comes back')
  await cmd.kill()
  const route = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' }
  const bad = await fetch(base('sandbox') + '/files?path=/tmp/tls.txt', { headers: { ...route, 'X-Access-Token': '0'.repeat(64) } })
  assert.equal(bad.status, 401); ok('a wrong envd token through sandbox.DOMAIN is refused')
} finally {
  await Sandbox.kill(sbx.sandboxId).catch(() => {})
}

// A kill under a running command, over the TLS proxy: the stream's
// connection is reset beneath TLS, which the SDK reports as E2B does.
const k = await Sandbox.create({ timeoutMs: 300_000 })
try {
  const cmd = await k.commands.run('sleep 60', { background: true })
  await k.kill()
  try {
    await cmd.wait()
    assert.fail('waiting on a command of a killed sandbox throws')
  } catch (e) {
    assert.ok(e instanceof TimeoutError, `a TimeoutError: ${e}`)
    assert.ok(String(e.message).includes('sandbox was killed or reached its end of life'), `${e.message}`)
    ok('a killed sandbox ends its command with E2B\'s TimeoutError and words over TLS')
  }
} finally {
  await Sandbox.kill(k.sandboxId).catch(() => {})
}
console.log('PASS')
