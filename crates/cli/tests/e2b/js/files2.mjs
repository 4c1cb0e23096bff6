// The npm SDK's side of files2.py: entry info (mode, symlink), list depth,
// metadata (write, getInfo, list, rename, overwrite, xattrs set in the
// sandbox), gzip, missing paths, watch (events with entries, recursive),
// an expired signed URL, and an early-refused upload reaching the SDK.
import assert from 'node:assert/strict'
import { Sandbox, FileType, FilesystemEventType, FileNotFoundError, SandboxError } from 'e2b'

const ok = (what) => console.log('ok:', what)
const D = `/tmp/files2-js-${process.pid}`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
async function until(what, fn, ms = 15000) {
  const t0 = Date.now()
  while (Date.now() - t0 < ms) {
    if (fn()) return ok(what)
    await sleep(100)
  }
  assert.fail(`timed out waiting for: ${what}`)
}

const sbx = await Sandbox.create({ timeoutMs: 300_000 })
try {
  await sbx.files.makeDir(`${D}/d`)
  const di = await sbx.files.getInfo(`${D}/d`)
  assert.equal(di.mode, 0o755); assert.equal(di.permissions, 'drwxr-xr-x'); ok('a 0755 dir is mode 493')
  await sbx.files.write(`${D}/d/a.txt`, 'hello')
  const fi = await sbx.files.getInfo(`${D}/d/a.txt`)
  assert.equal(fi.mode, 0o644); ok('a new file is 0644')
  await sbx.commands.run('ln -s a.txt link', { cwd: `${D}/d` })
  const li = await sbx.files.getInfo(`${D}/d/link`)
  assert.equal(li.type, FileType.FILE); assert.equal(li.symlinkTarget, `${D}/d/a.txt`); ok('a symlink to a file')
  await sbx.files.makeDir(`${D}/d/sub/deeper`)
  assert.equal((await sbx.files.list(`${D}/d`)).length, 3)
  assert.equal((await sbx.files.list(`${D}/d`, { depth: 2 })).length, 4); ok('list depth')

  const meta = { author: 'mish', purpose: 'upload' }
  const w = await sbx.files.write(`${D}/m.txt`, 'm', { metadata: meta })
  assert.deepEqual(w.metadata, meta); ok('write returns the metadata')
  assert.deepEqual((await sbx.files.getInfo(`${D}/m.txt`)).metadata, meta); ok('getInfo surfaces it')
  const listed = Object.fromEntries((await sbx.files.list(D)).map((e) => [e.name, e.metadata]))
  assert.deepEqual(listed['m.txt'], meta); assert.equal(listed.d, undefined); ok('list surfaces it')
  assert.deepEqual((await sbx.files.rename(`${D}/m.txt`, `${D}/m2.txt`)).metadata, meta); ok('rename keeps it')
  await sbx.files.write(`${D}/m2.txt`, 'again')
  assert.equal((await sbx.files.getInfo(`${D}/m2.txt`)).metadata, undefined); ok('an overwrite clears it')
  await sbx.commands.run(`python3 -c "import os; os.setxattr('${D}/d/a.txt', 'user.e2b.tag', b'set-inside')"`)
  assert.deepEqual((await sbx.files.getInfo(`${D}/d/a.txt`)).metadata, { tag: 'set-inside' }); ok('xattrs set inside')

  await sbx.files.write(`${D}/g.txt`, 'zipped '.repeat(100), { gzip: true })
  assert.equal(await sbx.files.read(`${D}/g.txt`, { gzip: true }), 'zipped '.repeat(100)); ok('gzip both ways')

  await sbx.files.remove(`${D}/nope`); ok('removing a missing path is no error')
  await assert.rejects(sbx.files.rename(`${D}/nope`, `${D}/nope2`), FileNotFoundError); ok('renaming a missing file')

  await sbx.files.makeDir(`${D}/w`)
  const evs = []
  const h = await sbx.files.watchDir(`${D}/w`, (e) => { evs.push(e) }, { recursive: true, includeEntry: true })
  await sbx.files.makeDir(`${D}/w/later`)
  await sbx.files.write(`${D}/w/later/f.txt`, 'f')
  await until('recursive watch sees the file in a directory made later',
    () => evs.some((e) => e.name === 'later/f.txt' && e.type === FilesystemEventType.WRITE))
  assert.ok(evs.some((e) => e.name === 'later' && e.type === FilesystemEventType.CREATE))
  const wr = evs.find((e) => e.name === 'later/f.txt' && e.type === FilesystemEventType.WRITE)
  assert.equal(wr.entry?.path, `${D}/w/later/f.txt`); ok('events carry their entry')
  await h.stop()

  const url = await sbx.downloadUrl(`${D}/d/a.txt`, { useSignatureExpiration: -120 })
  const r = await fetch(url)
  assert.equal(r.status, 401)
  assert.deepEqual(await r.json(), { code: 401, message: 'signature is already expired' }); ok('an expired signed URL')

  await sbx.pause()
  await assert.rejects(
    sbx.files.write(`${D}/paused.bin`, new Uint8Array(48 << 20)),
    (e) => e instanceof SandboxError && /paused|not running|was not found/.test(e.message),
  )
  ok('an upload to a paused sandbox gets the refusal')
} finally {
  await Sandbox.kill(sbx.sandboxId).catch(() => {})
}

const sec = await Sandbox.create({ timeoutMs: 120_000, secure: true })
try {
  await sec.files.makeDir(D)
  const evs = []
  const h = await sec.files.watchDir(D, (e) => { evs.push(e) })
  await sec.files.write(`${D}/s.txt`, 'secured')
  await until('watch through a secured envd', () => evs.some((e) => e.name === 's.txt'))
  await h.stop()
} finally {
  await Sandbox.kill(sec.sandboxId).catch(() => {})
}
console.log('PASS')
