// kds-engine web UI: reads the admin API with the token kept in this tab's
// sessionStorage and redraws the current view at most once a second.
'use strict';
(function () {
  const TOKEN_KEY = 'kds-engine-api-token';
  const POLL_MS = 1000;
  const PAGE_SIZE = 50;

  let role = '';
  let types = [];
  let gen = 0; // bumped on every view change; stale polls drop their result
  let timer = 0;
  let lastSig = '';
  let polls = 0; // completed polls, exposed as body[data-polls] for tests
  // cache keeps the last resource data of the current view with the store
  // revision it was read at: while the revision stays, nothing is re-read.
  let cache = null;

  // cached returns read()'s result, read again only when the revision of
  // the resources changed since the last read (or is unknown).
  async function cached(read) {
    let rev = null;
    try { rev = (await api('/api/v1/revision')).revision; } catch (e) { if (e instanceof AuthError) throw e; }
    if (rev !== null && cache && cache.rev === rev) return cache.data;
    const data = await read();
    cache = { rev, data };
    return data;
  }

  // ---- API -------------------------------------------------------------

  class AuthError extends Error {}

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  async function api(path) {
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const r = await fetch(path, { headers, credentials: 'omit', cache: 'no-store', redirect: 'error' });
    const text = await r.text();
    let body;
    try { body = JSON.parse(text); } catch (_) { body = { message: text }; }
    if (r.status === 401) throw new AuthError(body.message || 'unauthenticated');
    if (!r.ok) {
      const e = new Error(body.message || r.statusText);
      e.status = r.status;
      throw e;
    }
    return body;
  }

  // ---- DOM helpers -----------------------------------------------------

  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') n.className = v;
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    append(n, kids);
    return n;
  }

  function append(n, kids) {
    for (const k of kids) {
      if (k === undefined || k === null || k === false) continue;
      if (Array.isArray(k)) append(n, k);
      else n.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }

  function table(caption, head, rows, cls) {
    return el('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': caption },
      el('table', { class: cls || '' },
        el('caption', {}, caption),
        el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: head.length, class: 'muted' }, 'none')))));
  }

  // details is a disclosure whose open state survives redraws.
  const opened = new Set();
  function details(key, summary, body) {
    const d = el('details', { open: opened.has(key) }, el('summary', { 'data-focus': key }, summary), body);
    d.addEventListener('toggle', () => { if (d.open) opened.add(key); else opened.delete(key); });
    return d;
  }

  function muted(s) { return el('span', { class: 'muted' }, s); }

  function link(href, text, focusKey) {
    return el('a', { href, 'data-focus': focusKey || href }, text);
  }

  // ---- Times -----------------------------------------------------------

  function relative(d) {
    let s = Math.round((Date.now() - d.getTime()) / 1000);
    const future = s < 0;
    s = Math.abs(s);
    let out;
    if (s < 60) out = s + 's';
    else if (s < 3600) out = Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    else if (s < 86400) out = Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    else out = Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
    return future ? 'in ' + out : out + ' ago';
  }

  function pad(n) { return String(n).padStart(2, '0'); }

  function absolute(d) {
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  // when shows a time relative ("5s ago", refreshed every tick) and
  // absolute (local time; UTC in the tooltip).
  function when(iso) {
    if (!iso) return muted('—');
    const d = new Date(iso);
    if (isNaN(d)) return muted(iso);
    return el('time', { datetime: d.toISOString(), title: d.toISOString() },
      el('span', { class: 'rel' }, relative(d)), ' ', el('span', { class: 'abs' }, '(' + absolute(d) + ')'));
  }

  function refreshTimes() {
    for (const t of document.querySelectorAll('time[datetime] .rel')) {
      t.textContent = relative(new Date(t.parentNode.getAttribute('datetime')));
    }
  }

  // ---- YAML ------------------------------------------------------------

  function scalar(v) {
    if (v === null) return 'null';
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    const s = String(v);
    const plain = /^[A-Za-z_./][A-Za-z0-9_./ -]*$/.test(s) && !/ $/.test(s) &&
      !/^(true|false|null|yes|no|on|off|y|n|~)$/i.test(s);
    return plain ? s : JSON.stringify(s);
  }

  function yaml(v, ind) {
    ind = ind || '';
    if (Array.isArray(v)) {
      if (!v.length) return '[]';
      return v.map((x) => {
        const inner = yaml(x, ind + '  ');
        return ind + '- ' + (typeof x === 'object' && x !== null && Object.keys(x).length ? inner.trimStart() : inner);
      }).join('\n');
    }
    if (v !== null && typeof v === 'object') {
      const keys = Object.keys(v);
      if (!keys.length) return '{}';
      return keys.map((k) => {
        const x = v[k];
        const key = ind + scalar(k) + ':';
        if (x !== null && typeof x === 'object' && Object.keys(x).length) return key + '\n' + yaml(x, ind + '  ');
        return key + ' ' + yaml(x, '');
      }).join('\n');
    }
    return scalar(v);
  }

  // ---- Token prompt ----------------------------------------------------

  function showLogin(message) {
    gen++;
    clearTimeout(timer);
    document.getElementById('signout').hidden = true;
    const input = el('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
    const err = el('p', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
    const form = el('form', { id: 'login', class: 'card' },
      el('h1', {}, 'Admin API token'),
      el('p', {}, 'This API requires the token from the server\'s --api-token-file. It is kept for this tab only ' +
        '(sessionStorage) and sent in the Authorization header.'),
      el('label', { for: 'token' }, 'Token'), input,
      el('button', { type: 'submit' }, 'Sign in'), err);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        await start();
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(e instanceof AuthError ? 'The API refused this token: ' + e.message : e.message);
      }
    });
    const main = document.getElementById('main');
    main.replaceChildren(form);
    input.focus();
  }

  // ---- Views -----------------------------------------------------------

  function typeInfo(name) { return types.find((t) => t.name === name); }

  function statusOf(c) {
    if (c.online) return el('span', { class: 'ok status' }, 'online');
    if (!c.sessions) return el('span', { class: 'warn status' }, 'never connected');
    return el('span', { class: 'bad status' }, 'offline since ', when(c.disconnectedAt));
  }

  function sortedTypes(c) {
    return Object.values(c.types || {}).sort((a, b) => a.type.localeCompare(b.type));
  }

  const views = {
    zones: {
      title: 'Zones',
      global: true,
      load: () => api('/api/v1/zones'),
      build(data) {
        const zones = data.zones || [];
        const online = zones.filter((z) => z.online).length;
        const rows = zones.map((z) => {
          const ts = sortedTypes(z);
          const sum = (f) => ts.reduce((n, t) => n + (t[f] || 0), 0);
          const nacked = sum('responsesNacked');
          const rejected = sum('rejectedCount');
          const perType = el('table', { class: 'mini' },
            el('thead', {}, el('tr', {}, ['Type', 'Sent', 'Received', 'ACKed', 'NACKed', 'Held', 'Rejected'].map((h) => el('th', { scope: 'col' }, h)))),
            el('tbody', {}, ts.map((t) => el('tr', {},
              el('th', { scope: 'row' }, t.type),
              [t.resourcesSent, t.resourcesReceived, t.responsesAcked].map((n) => el('td', { class: 'num' }, n || 0)),
              el('td', { class: 'num' + (t.responsesNacked ? ' bad' : '') }, t.responsesNacked || 0),
              el('td', { class: 'num' }, t.resourcesHeld || 0),
              el('td', { class: 'num' + (t.rejectedCount ? ' bad' : '') }, t.rejectedCount || 0)))));
          return el('tr', { class: z.online ? '' : 'offline', 'data-zone': z.name },
            el('th', { scope: 'row', class: 'nowrap' }, link('#/sync?zone=' + encodeURIComponent(z.name), z.name)),
            el('td', {}, statusOf(z)),
            el('td', {}, el('div', { class: 'nowrap' }, z.peer || muted('no peer')),
              z.online ? el('div', {}, 'since ', when(z.connectedSince)) : null,
              el('div', { class: 'muted' }, z.sessions + (z.sessions === 1 ? ' session' : ' sessions')),
              z.replica ? el('div', { class: 'muted nowrap' }, 'replica ' + z.replica + (z.replica === data.replica ? ' (this one)' : '')) : null,
              z.initialSyncSlotSince ? el('div', { class: 'nowrap' }, 'initial sync: holds a slot since ', when(z.initialSyncSlotSince)) : null),
            el('td', {}, z.tokenId ? el('code', { class: 'token', title: z.tokenId }, z.tokenId.slice(0, 12) + (z.tokenId.length > 12 ? '…' : '')) : muted('—')),
            el('td', { class: 'num nowrap' }, sum('resourcesSent') + ' / ' + sum('resourcesReceived') + ' / ' + sum('resourcesHeld')),
            el('td', { class: 'num' + (nacked ? ' bad' : '') }, nacked),
            el('td', { class: 'num' + (rejected ? ' bad' : '') }, rejected),
            el('td', {}, details('zone-types:' + z.name, ts.length + ' types', perType)),
            el('td', { class: 'err' }, z.lastError || muted('—')));
        });
        return [
          el('p', { class: 'summary' }, zones.length + ' zones: ', el('span', { class: 'ok' }, online + ' online'), ', ',
            el('span', { class: zones.length - online ? 'bad' : '' }, (zones.length - online) + ' offline')),
          table('Zones that ever connected (resources summed over types; open a zone\'s types for each one)',
            ['Zone', 'Status', 'Session', 'Token id', 'Resources sent / received / held', 'NACKs', 'Rejected', 'Per type', 'Last error'], rows, 'zones'),
        ];
      },
    },

    sync: {
      title: 'Sync health',
      load: async (params) => {
        if (role === 'zone') return { zones: [await api('/api/v1/sync')] };
        const z = params.get('zone');
        return z ? { zones: [await api('/api/v1/zones/' + encodeURIComponent(z))], one: z } : api('/api/v1/zones');
      },
      build(data) {
        const out = [];
        if (data.one) out.push(el('p', {}, 'One zone. ', link('#/sync', 'All zones')));
        for (const c of data.zones || []) {
          const streams = (c.streams || []).map((s) => el('tr', {},
            el('th', { scope: 'row' }, s.name), el('td', {}, s.role), el('td', { class: 'num' }, s.sendBufferLen),
            el('td', { class: 'num' }, s.sendBufferHighWater), el('td', { class: 'num' }, s.capacity)));
          const typeRows = sortedTypes(c).map((t) => el('tr', { 'data-type': t.type },
            el('th', { scope: 'row' }, t.type),
            el('td', {}, when(t.lastAck)),
            el('td', { class: 'num' }, t.responsesNacked || 0),
            el('td', { class: 'err' }, t.lastNackError ? [when(t.lastNack), el('div', {}, t.lastNackError)] : muted('—')),
            el('td', { class: 'err' }, (t.rejected || []).length ? el('ul', { class: 'rejected' }, t.rejected.map((r) =>
              el('li', {}, el('code', {}, r.name), r.version ? ' @ ' + r.version : '', r.removal ? ' (removal)' : '', ': ',
                (r.errors || []).join('; ')))) : muted('—')),
            el('td', { class: 'err' }, t.error || t.waitingSince ? [t.error || null, t.waitingSince ? el('div', { class: 'warn' },
              t.waitingFor === 'initialSyncSlot'
                ? ['subscription waits for an initial-sync slot on global since ', when(t.waitingSince)]
                : ['subscription waits for room in the peer\'s inbound budget since ', when(t.waitingSince), ' (' + t.waitingBytes + ' bytes)']) : null] : muted('—'))));
          // On a zone: which global address it is on (or last tried) and
          // why the last session ended or the last attempt failed.
          const detail = c.address || c.lastError ? el('dl', { class: 'facts conn-detail' },
            c.address ? [el('dt', {}, role === 'zone' ? 'Global address' : 'Address'), el('dd', {}, el('code', {}, c.address))] : null,
            c.lastError ? [el('dt', {}, 'Last error'), el('dd', { class: 'last-error' }, c.lastError)] : null) : null;
          out.push(el('section', { class: 'conn' + (c.online ? '' : ' offline') },
            el('h2', {}, c.name, ' ', statusOf(c)),
            detail,
            table('Send buffers of ' + c.name + '\'s session', ['Logical stream', 'This side', 'Now', 'High-water mark', 'Capacity'], streams),
            table('Types on ' + c.name, ['Type', 'Last ACK', 'NACKs', 'Last NACK', 'Rejected resources', 'Error'], typeRows)));
        }
        if (!out.length) out.push(el('p', { class: 'muted' }, 'No zone has connected yet.'));
        return out;
      },
    },

    plugins: {
      title: 'Plugins',
      load: () => api('/api/v1/plugins'),
      build(data) {
        const b = data.buffer || {};
        const rows = (data.plugins || []).map((p) => el('tr', { class: p.state === 'running' ? '' : 'offline' },
          el('th', { scope: 'row' }, p.name, p.required ? muted(' (required)') : ''),
          el('td', {}, p.version || muted('—')),
          el('td', {}, el('span', { class: p.state === 'running' ? 'ok' : 'bad' }, p.state)),
          el('td', {}, (p.types || []).join(', ') || muted('none')),
          el('td', { class: 'num' }, p.restarts),
          el('td', { class: 'err' }, p.lastError || muted('—'))));
        return [
          table('Plugins', ['Name', 'Version', 'State', 'Types', 'Restarts', 'Last error'], rows),
          el('section', { class: 'card' },
            el('h2', {}, 'Send buffer per logical stream'),
            el('p', { class: 'formula' }, el('code', {}, 'registered types × window + headroom = capacity')),
            el('p', { class: 'formula', id: 'buffer-formula' }, el('code', {},
              b.registeredTypes + ' × ' + b.window + ' + ' + b.headroom + ' = ' + b.capacity)),
            el('p', { class: 'muted' }, b.formula || '')),
        ];
      },
    },

    resources: {
      title: 'Resources',
      mount(main, params) {
        const typ = params.get('type') || (types[0] && types[0].name) || '';
        const ti = typeInfo(typ) || {};
        const field = (id, label, value, hint, extra) => el('div', { class: 'field' },
          el('label', { for: id }, label), el('input', Object.assign({ id, name: id, value: value || '', placeholder: hint }, extra || {})));
        const select = el('select', { id: 'f-type', name: 'type' }, types.map((t) =>
          el('option', { value: t.name, selected: t.name === typ }, t.name)));
        const form = el('form', { class: 'filters', role: 'search' },
          el('div', { class: 'field' }, el('label', { for: 'f-type' }, 'Type'), select),
          ti.scope === 'Mesh' ? field('f-mesh', 'Mesh', params.get('mesh'), 'any') : null,
          role === 'global' && ti.direction === 'ZoneToGlobal' ? field('f-zone', 'Zone', params.get('zone'), 'any') : null,
          field('f-label', 'Label', params.get('label'), 'key=value'),
          field('f-q', 'Search names', params.get('q'), 'part of a name', { type: 'search' }),
          el('button', { type: 'submit' }, 'Filter'));
        const go = (ev) => {
          if (ev) ev.preventDefault();
          const p = new URLSearchParams();
          for (const n of ['type', 'mesh', 'zone', 'label', 'q']) {
            const i = form.elements[n === 'type' ? 'f-type' : 'f-' + n];
            if (i && i.value) p.set(n, i.value.trim());
          }
          if (ev && ev.type === 'change' && ev.target === select) { p.delete('mesh'); p.delete('zone'); }
          location.hash = '#/resources?' + p.toString();
        };
        form.addEventListener('submit', go);
        select.addEventListener('change', go);
        main.append(el('h1', {}, 'Resources'), form);
      },
      load: async (params) => {
        const typ = params.get('type') || (types[0] && types[0].name);
        if (!typ) return { items: [] };
        const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
        for (const n of ['mesh', 'zone', 'label', 'q', 'continue']) if (params.get(n)) q.set(n, params.get(n));
        const page = await cached(() => api('/api/v1/resources/' + encodeURIComponent(typ) + '?' + q.toString()));
        return Object.assign({ type: typ }, page);
      },
      build(data, params) {
        const ti = typeInfo(data.type) || {};
        const rows = (data.items || []).map((r) => {
          const q = new URLSearchParams();
          if (r.mesh) q.set('mesh', r.mesh);
          if (r.zone) q.set('zone', r.zone);
          const href = '#/resource/' + encodeURIComponent(r.type) + '/' + encodeURIComponent(r.name) + (q.toString() ? '?' + q : '');
          return el('tr', { 'data-name': r.name },
            el('th', { scope: 'row' }, link(href, r.name)),
            ti.scope === 'Mesh' ? el('td', {}, r.mesh) : null,
            role === 'global' ? el('td', {}, r.zone || muted(ti.direction === 'GlobalToZone' ? 'global' : '—')) : null,
            el('td', {}, el('code', {}, r.version)),
            el('td', {}, Object.entries(r.labels || {}).map(([k, v]) => el('span', { class: 'label' }, k + '=' + v))),
            el('td', {}, when(r.modificationTime)));
        });
        const head = ['Name'].concat(ti.scope === 'Mesh' ? ['Mesh'] : [], role === 'global' ? ['Origin zone'] : [], ['Version', 'Labels', 'Modified']);
        const nav = el('div', { class: 'pager' });
        if (params.get('continue')) {
          const p = new URLSearchParams(params); p.delete('continue');
          nav.append(link('#/resources?' + p.toString(), 'First page', 'first'));
        }
        if (data.continue) {
          const p = new URLSearchParams(params); p.set('type', data.type); p.set('continue', data.continue);
          nav.append(link('#/resources?' + p.toString(), 'Next page', 'next'));
        }
        const desc = ti.direction ? ti.direction + ', ' + ti.scope + '-scoped' + (ti.readOnly ? ', read-only here' : '') : '';
        return [el('p', { class: 'muted' }, data.type, desc ? ' — ' + desc : '', ' — page of at most ' + PAGE_SIZE + ' by zone, mesh, name'),
          table(data.type + ' resources', head, rows, 'resources'), nav];
      },
    },

    resource: {
      title: 'Resource',
      mount() {},
      load: async (params, rest) => {
        const [typ, name] = rest.map(decodeURIComponent);
        const q = new URLSearchParams();
        if (params.get('mesh')) q.set('mesh', params.get('mesh'));
        if (params.get('zone')) q.set('zone', params.get('zone'));
        const qs = q.toString() ? '?' + q : '';
        const path = encodeURIComponent(typ) + '/' + encodeURIComponent(name) + qs;
        const r = await cached(() => api('/api/v1/resources/' + path));
        const ti = typeInfo(typ) || {};
        let holders = null;
        if (role === 'global' && ti.direction === 'GlobalToZone') holders = await api('/api/v1/holders/' + path);
        return { r, holders };
      },
      build(data) {
        const r = data.r;
        const ti = typeInfo(r.type) || {};
        let spec = r.spec;
        const origin = r.zone ? 'zone ' + r.zone : (ti.direction === 'GlobalToZone' ? 'global' : (role === 'zone' ? 'this zone' : 'global'));
        const facts = [['Type', r.type], ['Name', r.name], ['Mesh', r.mesh], ['Origin', origin],
          ['Version', el('code', { id: 'version' }, r.version)], ['Created', when(r.creationTime)], ['Modified', when(r.modificationTime)],
          ['Labels', Object.entries(r.labels || {}).map(([k, v]) => el('span', { class: 'label' }, k + '=' + v))]];
        const out = [el('h1', {}, r.type, ' ', r.mesh ? r.mesh + '/' : '', r.name),
          el('dl', { class: 'facts' }, facts.filter((f) => f[1] !== undefined && f[1] !== '').map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
          el('h2', {}, 'Spec'), el('pre', { class: 'yaml', tabindex: 0, 'aria-label': 'spec as YAML' }, yaml(spec === undefined ? {} : spec))];
        if (data.holders) {
          const rows = data.holders.zones.map((h) => {
            let state;
            if (!h.online) state = el('span', { class: 'warn' }, 'offline: not known');
            else if (h.rejectedVersion && h.rejectedVersion === r.version) state = el('span', { class: 'bad' }, 'rejected');
            else if (h.holds && h.version === r.version) state = el('span', { class: 'ok' }, 'up to date');
            else if (h.pending) state = el('span', { class: 'warn' }, 'in flight');
            else if (h.holds) state = el('span', { class: 'warn' }, 'older version');
            else state = el('span', { class: 'muted' }, 'does not hold it');
            return el('tr', { 'data-zone': h.zone, class: h.online ? '' : 'offline' },
              el('th', { scope: 'row' }, h.zone), el('td', {}, state),
              el('td', {}, h.version ? el('code', {}, h.version) : muted('—')),
              el('td', {}, h.pending ? el('code', {}, h.pendingVersion || '(removal)') : muted('—')),
              el('td', { class: 'err' }, h.rejectedVersion ? [el('code', {}, h.rejectedVersion), ': ', (h.rejectedErrors || []).join('; ')] : muted('—')));
          });
          out.push(table('Which zones hold which version', ['Zone', 'State', 'Holds', 'In flight', 'Rejected (NACK)'], rows, 'holders'));
        }
        return out;
      },
    },
  };

  // ---- Routing and the poll loop --------------------------------------

  function parseHash() {
    const h = location.hash.replace(/^#\/?/, '');
    const [path, query] = h.split('?');
    const parts = path.split('/').filter(Boolean);
    let name = parts[0] || (role === 'global' ? 'zones' : 'resources');
    if (!views[name] || (views[name].global && role !== 'global')) name = role === 'global' ? 'zones' : 'resources';
    return { name, rest: parts.slice(1), params: new URLSearchParams(query || '') };
  }

  function buildNav(current) {
    const nav = document.getElementById('nav');
    const pages = ['zones', 'resources', 'plugins', 'sync'].filter((p) => !views[p].global || role === 'global');
    nav.replaceChildren(...pages.map((p) => el('a', { href: '#/' + p, 'aria-current': p === current || (current === 'resource' && p === 'resources') ? 'page' : false }, views[p].title)));
  }

  function setLive(text, bad) {
    const l = document.getElementById('live');
    l.textContent = text;
    l.className = 'live' + (bad ? ' bad' : '');
  }

  function show() {
    gen++;
    clearTimeout(timer);
    lastSig = '';
    cache = null;
    const r = parseHash();
    buildNav(r.name);
    const v = views[r.name];
    document.title = v.title + ' — kds-engine ' + role;
    const main = document.getElementById('main');
    main.replaceChildren();
    if (v.mount) v.mount(main, r.params);
    else main.append(el('h1', {}, v.title));
    const results = el('div', { id: 'results' }, muted('Loading…'));
    main.append(results);
    poll(gen, v, r, results);
  }

  async function poll(myGen, v, r, results) {
    const started = performance.now();
    try {
      const data = await v.load(r.params, r.rest);
      if (myGen !== gen) return;
      polls++;
      const sig = JSON.stringify(data);
      if (sig !== lastSig) {
        lastSig = sig;
        results.dataset.poll = String(polls);
        const focused = document.activeElement && document.activeElement.getAttribute('data-focus');
        results.replaceChildren(...[].concat(v.build(data, r.params)));
        if (focused) {
          const again = results.querySelector('[data-focus="' + CSS.escape(focused) + '"]');
          if (again) again.focus();
        }
      }
      refreshTimes();
      const ms = Math.round(performance.now() - started);
      document.body.dataset.pollMs = String(ms);
      document.body.dataset.polls = String(polls);
      setLive('live · updated ' + absolute(new Date()));
    } catch (e) {
      if (myGen !== gen) return;
      if (e instanceof AuthError) { showLogin('The API refused the token: ' + e.message); return; }
      setLive('update failed: ' + e.message, true);
      if (!lastSig) results.replaceChildren(el('p', { class: 'error', role: 'alert' }, e.message));
    }
    if (myGen === gen) timer = setTimeout(() => poll(myGen, v, r, results), POLL_MS);
  }

  async function start() {
    const t = await api('/api/v1/types');
    role = t.role;
    types = t.types || [];
    document.getElementById('role').textContent = role;
    document.getElementById('signout').hidden = !token();
    show();
  }

  window.addEventListener('hashchange', () => { if (role) show(); });
  document.addEventListener('DOMContentLoaded', () => {
    document.getElementById('signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      role = '';
      showLogin('');
    });
    start().catch((e) => {
      if (e instanceof AuthError) showLogin(token() ? 'The API refused the token: ' + e.message : '');
      else document.getElementById('main').replaceChildren(el('p', { class: 'error', role: 'alert' }, e.message));
    });
  });
})();
