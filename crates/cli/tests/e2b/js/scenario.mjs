// The npm E2B SDK against dwell: create, run with streaming output, files,
// pause, connect (resume), read back, list by metadata, kill.
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'

const ok = (what) => console.log('ok:', what)
const tag = `js-${process.pid}`
const sbx = await Sandbox.create({ timeoutMs: 300_000, metadata: { suite: tag } })
try {
  const lines = []
  const r = await sbx.commands.run('echo hi; echo there', { onStdout: (d) => lines.push(d) })
  assert.equal(r.stdout, 'hi\nthere\n'); ok('commands.run')
  assert.ok(lines.join('').includes('there')); ok('onStdout streams')
  try {
    await sbx.commands.run('exit 7')
    assert.fail('a non-zero exit throws')
  } catch (e) {
    assert.equal(e.exitCode, 7); ok('CommandExitError with exit code 7')
  }
  await sbx.files.write('/home/user/js.txt', 'from node')
  assert.equal(await sbx.files.read('/home/user/js.txt'), 'from node'); ok('files write/read')
  assert.equal(await sbx.pause(), true); ok('pause')
  const again = await Sandbox.connect(sbx.sandboxId)
  assert.equal(await again.files.read('/home/user/js.txt'), 'from node'); ok('file survives pause/connect')
  const listed = await Sandbox.list({ query: { metadata: { suite: tag } } }).nextItems()
  assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId]); ok('list by metadata')
  assert.equal(await again.kill(), true); ok('kill')
} finally {
  await Sandbox.kill(sbx.sandboxId).catch(() => {})
}
console.log('PASS')
