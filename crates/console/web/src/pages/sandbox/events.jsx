// A sandbox's event log as a timeline, newest first: state changes,
// requests, steps and errors. Read once in full, then every 2 s only the
// events after the newest one seen (`?after=SEQ`).
import { useEffect, useState } from "preact/hooks";
import { get } from "../../api.js";
import { Empty, ErrorBox, Loading, relative, time } from "../../ui.jsx";

const SHOWN = 300;

export default function Events({ sb }) {
  const [events, setEvents] = useState(null);
  const [error, setError] = useState(null);
  const [all, setAll] = useState(false);
  const [kind, setKind] = useState("");
  useEffect(() => {
    let live = true;
    let after = 0;
    let acc = [];
    const load = async () => {
      try {
        const more = await get(`/v1/sandboxes/${encodeURIComponent(sb.id)}/events`, { after });
        if (!live) return;
        if (more && more.length) {
          acc = acc.concat(more);
          after = more[more.length - 1].seq;
        }
        setEvents(acc);
        setError(null);
      } catch (e) {
        if (live) setError(e);
      }
    };
    load();
    const t = setInterval(() => document.visibilityState === "visible" && load(), 2000);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [sb.id]);
  if (!events && !error) return <Loading what="events" />;
  const list = (events || []).filter((e) => !kind || e.kind === kind).slice().reverse();
  return (
    <section aria-labelledby="ev-title">
      <h2 id="ev-title">Events</h2>
      <ErrorBox error={error} title="Could not read the events" />
      <div class="filters">
        <label>
          Kind{" "}
          <select value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            <option value="">all</option>
            <option value="state">state</option>
            <option value="request">request</option>
            <option value="step">step</option>
            <option value="error">error</option>
          </select>
        </label>
      </div>
      {list.length === 0 ? (
        <Empty>No events{kind ? ` of kind ${kind}` : ""} yet.</Empty>
      ) : (
        <ol class="timeline" aria-live="polite" aria-relevant="additions" data-testid="events">
          {(all ? list : list.slice(0, SHOWN)).map((e) => (
            <li class={`ev-${e.kind}`} key={e.seq}>
              <time datetime={new Date(e.at).toISOString()} title={relative(Math.min(e.at, Date.now()))}>
                {time(e.at)}
              </time>
              <span class={`badge kind-${e.kind}`}>{e.kind}</span>
              <span class="msg">{e.message}</span>
            </li>
          ))}
        </ol>
      )}
      {!all && list.length > SHOWN ? (
        <button onClick={() => setAll(true)}>Show all {list.length} events</button>
      ) : null}
    </section>
  );
}
