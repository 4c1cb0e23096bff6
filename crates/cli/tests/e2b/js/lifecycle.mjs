// The npm E2B SDK's side of the sandbox lifecycle (run by
// crates/cli/tests/e2b.rs with a daemon that sweeps once a minute):
// listing without an order is newest first, paging over running and paused
// sandboxes, timeouts and setTimeout fire within a second of their time, a
// sandbox killed under a command ends it with E2B's TimeoutError and words,
// fork, metrics over a time range.
import assert from 'node:assert/strict'
import { Sandbox, TimeoutError } from 'e2b'

const ok = (what) => console.log('ok:', what)
const tag = `jslc-${process.pid}`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const made = []
const create = async (opts = {}) => {
  const s = await Sandbox.create({ timeoutMs: 300_000, ...opts, metadata: { suite: tag, ...(opts.metadata || {}) } })
  made.push(s.sandboxId)
  return s
}

// `s` stops running within `slack` ms of `deadline` (Date.now()).
async function goneWithin(s, deadline, slack, what) {
  while (Date.now() < deadline + slack) {
    if (!(await s.isRunning())) {
      const late = Date.now() - deadline
      assert.ok(late <= slack, `${what}: ${late} ms late`)
      ok(`${what} (${late} ms from its deadline)`)
      return
    }
    await sleep(100)
  }
  assert.fail(`${what}: still running ${slack} ms after its deadline`)
}

try {
  // Newest first without an order; running and paused pages together.
  const older = await create({ metadata: { case: 'paging' } })
  const newer = await create({ metadata: { case: 'paging' } })
  await newer.pause()
  const pager = Sandbox.list({ query: { metadata: { suite: tag, case: 'paging' }, state: ['running', 'paused'] }, limit: 1 })
  const p1 = await pager.nextItems()
  assert.deepEqual(p1.map((x) => [x.sandboxId, x.state]), [[newer.sandboxId, 'paused']]); ok('page 1: the newest (paused)')
  assert.equal(pager.hasNext, true)
  const p2 = await pager.nextItems()
  assert.deepEqual(p2.map((x) => [x.sandboxId, x.state]), [[older.sandboxId, 'running']]); ok('page 2: the older (running)')
  assert.equal(pager.hasNext, false); ok('no third page')
  const all = await Sandbox.list({ query: { metadata: { suite: tag, case: 'paging' } } }).nextItems()
  assert.deepEqual(all.map((x) => x.sandboxId), [newer.sandboxId, older.sandboxId]); ok('listing without an order is newest first')
  await Sandbox.kill(older.sandboxId)
  await Sandbox.kill(newer.sandboxId)

  // Timeouts on time.
  const short = await create({ timeoutMs: 3_000 })
  await goneWithin(short, Date.now() + 3_000, 1_500, 'a 3 s timeout fires on time')
  const shortened = await create()
  await shortened.setTimeout(2_000)
  await goneWithin(shortened, Date.now() + 2_000, 1_500, 'setTimeout shortens 300 s to 2 s')

  // Metrics over a range.
  const m = await create()
  const t0 = new Date(Date.now() - 5_000)
  let samples = []
  for (let i = 0; i < 50 && samples.length === 0; i++) {
    samples = await m.getMetrics({ start: t0, end: new Date() })
    if (samples.length === 0) await sleep(200)
  }
  assert.ok(samples.length > 0); ok('a sample in the range up to now')
  const past = await m.getMetrics({ start: new Date(t0 - 3_600_000), end: new Date(t0 - 1_800_000) })
  assert.deepEqual(past, []); ok('nothing for a range before the sandbox')

  // Fork: the files, independent, many.
  await m.files.write('/home/user/state.txt', 'before fork')
  const [f] = await m.fork()
  assert.ok(f instanceof Sandbox, `a fork: ${f}`)
  made.push(f.sandboxId)
  assert.equal(await f.files.read('/home/user/state.txt'), 'before fork'); ok('the fork has the files')
  await f.files.write('/home/user/state.txt', 'in fork')
  assert.equal(await m.files.read('/home/user/state.txt'), 'before fork'); ok('and is independent')
  const two = await Sandbox.fork(m.sandboxId, { count: 2 })
  for (const x of two) if (x instanceof Sandbox) made.push(x.sandboxId)
  assert.equal(two.filter((x) => x instanceof Sandbox).length, 2); ok('two forks by id')

  // A kill under a running command.
  const k = await create()
  const cmd = await k.commands.run('sleep 60', { background: true })
  await k.kill()
  try {
    await cmd.wait()
    assert.fail('waiting on a command of a killed sandbox throws')
  } catch (e) {
    assert.ok(e instanceof TimeoutError, `a TimeoutError: ${e}`)
    assert.ok(String(e.message).includes('sandbox was killed or reached its end of life'), `${e.message}`)
    ok('a killed sandbox ends its command with E2B\'s TimeoutError and words')
  }
} finally {
  for (const id of made) await Sandbox.kill(id).catch(() => {})
}
console.log('PASS')
