// The default account with the npm SDK (issue 15): requests that name no
// user run as `user` in /home/user with passwordless sudo, what it writes is
// its own, root can still be named, and the base template exists.
import assert from 'node:assert/strict'
import { Sandbox, Template } from 'e2b'

const ok = (what) => console.log('ok:', what)
const sbx = await Sandbox.create({ timeoutMs: 300_000 })
try {
  const r = await sbx.commands.run('id -un; pwd')
  assert.equal(r.stdout, 'user\n/home/user\n'); ok('commands run as user in its home')
  assert.equal((await sbx.commands.run('sudo -n id -u')).stdout.trim(), '0'); ok('passwordless sudo')
  assert.equal((await sbx.commands.run('whoami', { user: 'root' })).stdout, 'root\n'); ok('user: root')
  const info = await sbx.files.write('js-note.txt', 'mine')
  assert.equal(info.path, '/home/user/js-note.txt'); ok('relative paths are in user\'s home')
  const e = await sbx.files.getInfo('/home/user/js-note.txt')
  assert.equal(e.owner, 'user'); assert.equal(e.group, 'user'); ok('written files are user\'s')
  assert.equal(await Template.exists('base'), true); ok('the base template exists')
} finally {
  await Sandbox.kill(sbx.sandboxId).catch(() => {})
}
console.log('PASS')
