// FlowSec live flows: subscribes to the relay's SignalR hub and shows each flow event as a table
// row, newest on top. Read-only. Every value is set with textContent (process names and DNS names
// come from monitored hosts and must never be interpreted as HTML).

const MAX_ROWS = 500;
const HUB_URL = '/hub/live';

const tbody = document.querySelector('#flows tbody');
const statusEl = document.getElementById('status');
const countsEl = document.getElementById('counts');
const emptyEl = document.getElementById('empty');
let received = 0;

function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function address(ep) {
  if (!ep || !ep.ip) return '';
  const host = ep.ip.includes(':') ? `[${ep.ip}]` : ep.ip;
  return ep.port ? `${host}:${ep.port}` : host;
}

function actor(ep) {
  if (!ep) return '';
  const who = ep.workload || ep.pod || (ep.names && ep.names[0]) || '';
  const proc = ep.process ? (ep.pid ? `${ep.process}[${ep.pid}]` : ep.process) : '';
  return who && proc && who !== ep.process ? `${who} · ${proc}` : who || proc;
}

function duration(ms) {
  if (ms === undefined || ms === null) return '';
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

function bytes(n) {
  n = Number(n || 0);
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(1)} ${units[i]}`;
}

function cell(tr, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  tr.appendChild(td);
  return td;
}

function row(e) {
  const src = e.source || {};
  const dst = e.destination || {};
  const flow = e.flow || {};
  const tr = document.createElement('tr');
  // Data attributes name what a row is about, so tests and scripts can find a flow precisely.
  const data = {
    time: e.time, node: e.node,
    'src-ip': src.ip, 'src-port': src.port, 'src-pid': src.pid, 'src-process': src.process,
    'src-workload': src.workload, 'src-pod': src.pod, 'src-namespace': src.namespace,
    'dst-ip': dst.ip, 'dst-port': dst.port, 'dst-pid': dst.pid, 'dst-process': dst.process,
    'dst-workload': dst.workload, 'dst-pod': dst.pod, 'dst-namespace': dst.namespace,
    protocol: flow.protocol, state: flow.state, verdict: flow.verdict,
  };
  for (const [name, value] of Object.entries(data)) {
    if (value !== undefined && value !== null && value !== '') tr.setAttribute(`data-${name}`, String(value));
  }
  if (flow.verdict === 'dropped' || ['refused', 'reset', 'timeout'].includes(flow.state)) tr.className = 'bad';

  cell(tr, (e.time || '').slice(11, 23)).title = e.time || '';
  cell(tr, e.node || '');
  cell(tr, actor(src));
  cell(tr, address(src), 'addr');
  cell(tr, actor(dst));
  cell(tr, address(dst), 'addr');
  cell(tr, (flow.protocol || '').toUpperCase());
  cell(tr, flow.state || '');
  cell(tr, duration(flow.duration_ms), 'num');
  cell(tr, `${bytes(flow.bytes_sent)} / ${bytes(flow.bytes_received)}`, 'num');
  return tr;
}

function show(events) {
  const flows = events.filter((e) => e && e.type === 'flow');
  if (flows.length === 0) return;
  received += flows.length;
  // A message holds events oldest first; the table shows newest first.
  const fragment = document.createDocumentFragment();
  for (let i = flows.length - 1; i >= 0 && fragment.childNodes.length < MAX_ROWS; i--) {
    fragment.appendChild(row(flows[i]));
  }
  tbody.prepend(fragment);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
  emptyEl.hidden = true;
  countsEl.textContent = `${received} flows (showing ${tbody.rows.length})`;
}

const connection = new window.signalR.HubConnectionBuilder()
  .withUrl(HUB_URL)
  .withAutomaticReconnect({ nextRetryDelayInMilliseconds: (ctx) => Math.min(10000, 500 * 2 ** ctx.previousRetryCount) })
  .configureLogging(window.signalR.LogLevel.Warning)
  .build();

connection.on('events', show);
connection.onreconnecting(() => setStatus('reconnecting', 'reconnecting…'));
connection.onreconnected(() => setStatus('connected', 'live'));
connection.onclose(() => { setStatus('disconnected', 'disconnected'); start(); });

// Automatic reconnect covers dropped connections only; the first connection is retried here.
async function start(attempt = 0) {
  try {
    setStatus('connecting', 'connecting…');
    await connection.start();
    setStatus('connected', 'live');
  } catch {
    setStatus('disconnected', 'relay unreachable, retrying…');
    setTimeout(() => start(attempt + 1), Math.min(10000, 500 * 2 ** attempt));
  }
}

start();
