// Follows one operation with Server-Sent Events. Plain browser JavaScript (a module), no
// build step.

/** Every event received, parsed, in arrival order (read by the end-to-end test). */
window.acceptedEvents = [];

const EVENT_TYPES = [
  'operation.snapshot',
  'operation.started',
  'operation.progress',
  'operation.succeeded',
  'operation.failed',
  'operation.canceled',
];
const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);

const form = document.getElementById('start-form');
const button = document.getElementById('start');
const operationId = document.getElementById('operation-id');
const statusText = document.getElementById('status');
const bar = document.getElementById('progress');
const percent = document.getElementById('percent');
const message = document.getElementById('message');
const result = document.getElementById('result');
const log = document.getElementById('log');

let source = null;

function showProgress(progress) {
  if (!progress) return;
  if (typeof progress.fraction === 'number') {
    bar.value = progress.fraction;
    percent.textContent = `${Math.round(progress.fraction * 100)}%`;
  }
  if (progress.message) message.textContent = progress.message;
}

/** Updates the page from one event: a snapshot carries the monitor, the others `data`. */
function show(event) {
  const state = event.type === 'operation.snapshot' ? event.operation : event.data;
  statusText.textContent = state.status;
  showProgress(state.progress);
  if (state.status === 'succeeded') {
    bar.value = bar.max;
    percent.textContent = '100%';
    result.textContent = JSON.stringify(state.result, null, 2);
  } else if (state.status === 'failed' && state.error) {
    result.textContent = `${state.error.code}: ${state.error.message}`;
  }
  const item = document.createElement('li');
  item.textContent = `#${event.seq} ${event.type}`;
  log.append(item);
  return state;
}

function follow(id, token) {
  const url = `/v1/operations/${encodeURIComponent(id)}/events?access_token=${encodeURIComponent(token)}`;
  source = new EventSource(url);
  const current = source;
  for (const type of EVENT_TYPES) {
    current.addEventListener(type, (received) => {
      const event = JSON.parse(received.data);
      window.acceptedEvents.push(event);
      const state = show(event);
      // The stream ends after the terminal event (or a snapshot of an operation already over).
      if (TERMINAL.has(state.status)) {
        current.close();
        button.disabled = false;
      }
    });
  }
  // The server is going away (a restart): EventSource reconnects with Last-Event-ID itself.
  current.addEventListener('stream.closing', () => {
    message.textContent = 'server closing the stream; reconnecting';
  });
  current.addEventListener('error', () => {
    // While CONNECTING, the browser retries on its own; CLOSED means it gave up (401, 204...).
    if (current.readyState === EventSource.CLOSED && source === current) {
      statusText.textContent = 'stream closed';
      button.disabled = false;
    }
  });
}

form.addEventListener('submit', async (submit) => {
  submit.preventDefault();
  if (source) source.close();
  window.acceptedEvents = [];
  log.replaceChildren();
  bar.value = 0;
  percent.textContent = '0%';
  message.textContent = 'none';
  result.textContent = 'none';
  statusText.textContent = 'starting';
  button.disabled = true;
  const fields = new FormData(form);
  try {
    const response = await fetch('/demo/start', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ steps: Number(fields.get('steps')), ms: Number(fields.get('ms')) }),
    });
    const started = await response.json();
    if (!response.ok) throw new Error(started.error ?? `HTTP ${response.status}`);
    operationId.textContent = started.operationId;
    follow(started.operationId, started.token);
  } catch (error) {
    statusText.textContent = `could not start: ${error.message}`;
    button.disabled = false;
  }
});
