// The default account with the npm SDK (issue 15): requests that name no
// user run as `user` in /home/user with passwordless sudo, what it writes is
// its own, root can still be named, the base template exists, and a
// template built on it copies a wildcard source into a directory, its steps
// running as user.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
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

const ctx = fs.mkdtempSync(path.join(os.tmpdir(), 'e2b-account-js-'))
try {
  fs.mkdirSync(path.join(ctx, 'folder'))
  fs.writeFileSync(path.join(ctx, 'folder', 'a.txt'), 'a')
  fs.writeFileSync(path.join(ctx, 'folder', 'b.txt'), 'b')
  const name = `account-js-${process.pid}`
  const tpl = Template({ fileContextPath: ctx })
    .fromTemplate('base')
    .copy('folder/*', 'folder')
    .runCmd('cat folder/a.txt folder/b.txt > joined.txt; whoami > who.txt')
  await Template.build(tpl, name)
  const t = await Sandbox.create(name, { timeoutMs: 300_000 })
  try {
    assert.equal(await t.files.read('/home/user/joined.txt'), 'ab'); ok('a wildcard copy lands in the directory')
    assert.equal(await t.files.read('/home/user/who.txt'), 'user\n'); ok('build steps run as user')
  } finally {
    await Sandbox.kill(t.sandboxId).catch(() => {})
  }
} finally {
  fs.rmSync(ctx, { recursive: true, force: true })
}
console.log('PASS')
