// compat.mjs: the client-compatibility cases of unibus for nats.js v2.
//
// The same cases as tests/compat/compat_c.c, driving the real, unmodified
// nats.js client (npm package "nats", pinned in package-lock.json) against a
// NATS-protocol server provisioned by tests/compat/test_compat.py:
//
//   node compat.mjs CASE --creds DIR --room ROOM --url URL [--url URL2 ...]
//                   [--ca FILE] [--wrong-ca FILE]
//
// DIR holds ROLE.id ("HANDLE PUBLIC-NKEY") and ROLE.seed per role; alice
// connects to the first URL, bob to the second, carol to the third. Cases
// that need the harness to change membership print "READY <what>" and wait
// for a line on stdin. Exit 0 on pass; a "FAIL" line on stderr otherwise.
// Every wait is bounded; negative checks end at a fence (a later message of
// the same publisher, or a flush of the receiving connection).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import {
  connect,
  nkeyAuthenticator,
  headers as natsHeaders,
  ErrorCode,
  StringCodec,
} from "nats";

const sc = StringCodec();
let CASE = "?";

class Failure extends Error {}

function fail(msg) {
  throw new Failure(msg);
}

function check(cond, msg) {
  if (!cond) fail(typeof msg === "function" ? msg() : msg);
}

function note(msg) {
  process.stderr.write(`  js/${CASE}: ${msg}\n`);
}

const now = () => Number(process.hrtime.bigint() / 1000000n);
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

async function within(promise, ms, what) {
  let timer;
  const t = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Failure(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, t]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Arguments and members
// ---------------------------------------------------------------------------
const args = { urls: [] };

function parseArgs(argv) {
  args.case = argv[0];
  for (let i = 1; i < argv.length; i += 2) {
    const v = argv[i + 1];
    if (v === undefined) usage();
    switch (argv[i]) {
      case "--url": args.urls.push(v); break;
      case "--creds": args.creds = v; break;
      case "--room": args.room = v; break;
      case "--ca": args.ca = v; break;
      case "--wrong-ca": args.wrongCa = v; break;
      default: usage();
    }
  }
  if (!args.case || !CASES[args.case] || !args.urls.length || !args.creds || !args.room) usage();
  args.tok = "js" + Date.now() + randomBytes(4).toString("hex");
}

function usage() {
  process.stderr.write(
    "usage: node compat.mjs CASE --creds DIR --room ROOM --url URL [--url URL ...]\n" +
      "                       [--ca FILE] [--wrong-ca FILE]\ncases: " +
      Object.keys(CASES).join(" ") + "\n");
  process.exit(2);
}

function member(role) {
  const [handle, pub] = readFileSync(`${args.creds}/${role}.id`, "utf8").trim().split(/\s+/);
  const seed = readFileSync(`${args.creds}/${role}.seed`, "utf8").trim();
  return { role, handle, pub, seed, inbox: `_INBOX.${handle}` };
}

function urlOf(role) {
  const i = { bob: 1, carol: 2 }[role] || 0;
  return args.urls[i % args.urls.length];
}

const subj = (suffix) => `room.${args.room}.${args.tok}.${suffix}`;
const violation = (op, s) => `Permissions Violation for ${op} to "${s}"`;

// ---------------------------------------------------------------------------
// Connections: a member's connection with its status events recorded
// ---------------------------------------------------------------------------
class Conn {
  constructor(m, nc) {
    this.m = m;
    this.nc = nc;
    this.events = []; // {type, data, permissionContext, at}
    this.waiters = [];
    this.closedAt = null;
    this.closedErr = undefined;
    (async () => {
      for await (const s of nc.status()) {
        this.events.push({ ...s, at: now() });
        this.wake();
      }
    })().catch(() => {});
    nc.closed().then((err) => {
      this.closedAt = now();
      this.closedErr = err;
      this.wake();
    });
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  // Waits until pred() is true (re-checked on every event), bounded.
  async until(pred, ms, what) {
    const deadline = now() + ms;
    while (!pred()) {
      const left = deadline - now();
      if (left <= 0) fail(`timed out after ${ms} ms: ${what}`);
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => { clearTimeout(t); r(); });
      });
    }
  }

  errors() {
    return this.events.filter((e) => e.type === "error");
  }

  async expectViolation(seen, op, subject, queue) {
    await this.until(() => this.errors().length > seen, 3000,
      `${this.m.role}: permissions error for ${op} to "${subject}"`);
    const e = this.errors()[seen];
    check(e.data === ErrorCode.PermissionsViolation,
      `${this.m.role}: error ${e.data}, expected ${ErrorCode.PermissionsViolation}`);
    const ctx = e.permissionContext || {};
    check(ctx.operation === op.toLowerCase() && ctx.subject === subject && ctx.queue === queue,
      () => `${this.m.role}: permission error about ${JSON.stringify(ctx)}, expected ` +
        `${op} to "${subject}"${queue ? ` using queue "${queue}"` : ""}`);
    check(!this.nc.isClosed(), `${this.m.role}: connection closed after a permissions error`);
  }

  async flush() {
    await within(this.nc.flush(), 3000, `${this.m.role}: flush`);
  }

  async close() {
    if (!this.nc.isClosed()) await within(this.nc.close(), 5000, `${this.m.role}: close`);
  }
}

function connOpts(m, o = {}) {
  let url = o.url || urlOf(m.role);
  const opts = {
    name: m.handle,
    inboxPrefix: m.inbox,
    timeout: 3000,
    reconnect: !!o.reconnect,
    maxReconnectAttempts: o.reconnect ? 10 : 0,
    reconnectTimeWait: 100,
    reconnectJitter: 0,
    reconnectJitterTLS: 0,
  };
  if (o.authenticator) opts.authenticator = o.authenticator;
  else if (!o.noCreds) opts.authenticator = nkeyAuthenticator(sc.encode(m.seed));
  if (url.startsWith("tls://")) {
    url = url.slice("tls://".length);
    opts.tls = { caFile: o.ca || args.ca };
    if (o.servername) opts.tls.servername = o.servername;
  }
  opts.servers = [url];
  return opts;
}

async function open(role, o = {}) {
  const m = member(role);
  let nc;
  try {
    nc = await connect(connOpts(m, o));
  } catch (err) {
    fail(`${role} (${m.handle}, ${m.pub}) could not connect to ${o.url || urlOf(role)}: ${err.message} (${err.code})`);
  }
  return new Conn(m, nc);
}

// Tries to connect and expects a refusal; returns the error.
async function refused(role, o, what) {
  const m = member(role);
  const t0 = now();
  let nc;
  try {
    nc = await connect(connOpts(m, o));
  } catch (err) {
    const took = now() - t0;
    check(took < 2500, `${what}: refusal took ${took} ms`);
    return err;
  }
  await nc.close();
  fail(`${what}: connection accepted`);
}

// ---------------------------------------------------------------------------
// Subscriptions that queue their messages
// ---------------------------------------------------------------------------
class Sub {
  constructor(conn, subject, opts = {}) {
    this.conn = conn;
    this.subject = subject;
    this.msgs = [];
    this.errs = [];
    this.waiters = [];
    this.sub = conn.nc.subscribe(subject, {
      ...opts,
      callback: (err, msg) => {
        if (err) this.errs.push(err);
        else this.msgs.push(msg);
        const w = this.waiters;
        this.waiters = [];
        w.forEach((f) => f());
      },
    });
  }

  // The next message within ms, or null.
  async next(ms = 3000) {
    const deadline = now() + ms;
    while (!this.msgs.length) {
      const left = deadline - now();
      if (left <= 0) return null;
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => { clearTimeout(t); r(); });
      });
    }
    return this.msgs.shift();
  }

  async must(what) {
    const m = await this.next(3000);
    check(m !== null, `no message within 3 s: ${what}`);
    return m;
  }

  async expect(subject, data, what) {
    const m = await this.must(what);
    check(m.subject === subject, `${what}: subject '${m.subject}', expected '${subject}'`);
    check(m.string() === data, `${what}: payload '${m.string()}', expected '${data}'`);
    return m;
  }

  drain() {
    const m = this.msgs;
    this.msgs = [];
    return m;
  }

  unsubscribe() {
    this.sub.unsubscribe();
  }
}

// Waits until `to` sees probes published by `from` (see compat_c.c).
async function syncInterest(from, to) {
  const probe = `room.${args.room}.probe-${args.tok}.${to.m.role}`;
  const s = new Sub(to, probe);
  await to.flush();
  const deadline = now() + 10000;
  let m = null;
  while (m === null && now() < deadline) {
    from.nc.publish(probe, sc.encode("probe"));
    await from.flush();
    m = await s.next(50);
  }
  check(m !== null, `${to.m.role} never received ${from.m.role}'s probes within 10 s`);
  s.unsubscribe();
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------
async function casePubsub() {
  const a = await open("alice");
  const b = await open("bob");
  const s = subj("chat");
  const sb = new Sub(b, s);
  await syncInterest(a, b);
  for (let i = 0; i < 20; i++) a.nc.publish(s, sc.encode(`m${i}`));
  await a.flush();
  for (let i = 0; i < 20; i++) {
    const m = await sb.expect(s, `m${i}`, "bob receiving alice's room messages in order");
    check(!m.reply, `unexpected reply subject '${m.reply}'`);
  }
  const own = `member.${a.m.handle}.${args.tok}.note`;
  const so = new Sub(a, own);
  a.nc.publish(own, sc.encode("to myself"));
  await so.expect(own, "to myself", "alice's own member subject");
  check(!a.errors().length && !b.errors().length, "unexpected asynchronous errors");
  await a.close();
  await b.close();
}

async function caseWildcards() {
  const a = await open("alice");
  const b = await open("bob");
  const R = args.room, T = args.tok;
  const p = [subj("a"), subj("a.b"), `room.${R}.${T}`, `room.${R}.x.${T}.mid`, subj("end"),
    `room.${R}.y.${T}.mid`];
  const subs = [
    [new Sub(b, `room.${R}.${T}.*`), [0, 4]],
    [new Sub(b, `room.${R}.${T}.>`), [0, 1, 4]],
    [new Sub(b, `room.${R}.*.${T}.mid`), [3, 5]],
  ];
  await syncInterest(a, b);
  for (const x of p) a.nc.publish(x, sc.encode(x));
  await a.flush();
  for (const [s, want] of subs) {
    for (const i of want) await s.expect(p[i], p[i], `subscription '${s.subject}'`);
  }
  await b.flush();
  for (const [s] of subs) {
    const extra = s.drain();
    check(!extra.length, () => `subscription '${s.subject}' also received '${extra[0].subject}'`);
  }
  await a.close();
  await b.close();
}

async function caseQueue() {
  const N = 200;
  const a = await open("alice");
  const b = await open("bob");
  const c = await open("carol");
  const work = subj("work"), fence = subj("fence");
  const qb = new Sub(b, work, { queue: "workers" });
  const qc = new Sub(c, work, { queue: "workers" });
  const fb = new Sub(b, fence);
  const fc = new Sub(c, fence);
  const plain = new Sub(a, work);
  await syncInterest(a, b);
  await syncInterest(a, c);
  for (let i = 0; i < N; i++) a.nc.publish(work, sc.encode(String(i)));
  a.nc.publish(fence, sc.encode("fence"));
  await a.flush();
  await fb.expect(fence, "fence", "bob's fence");
  await fc.expect(fence, "fence", "carol's fence");
  await a.flush();
  const seen = new Array(N).fill(0);
  const gb = qb.drain(), gc = qc.drain(), gp = plain.drain();
  for (const m of [...gb, ...gc]) seen[Number(m.string())]++;
  seen.forEach((n, i) => check(n === 1, `message ${i} delivered ${n} times to the queue group`));
  check(gb.length > 0 && gc.length > 0, `one queue member got nothing (bob ${gb.length}, carol ${gc.length})`);
  check(gp.length === N, `plain subscriber got ${gp.length} of ${N}`);
  note(`queue split: bob ${gb.length}, carol ${gc.length}`);
  await a.close();
  await b.close();
  await c.close();
}

// bob answers each request once, "twice" requests twice.
function responder(b, subject) {
  const r = { lastReply: "" };
  b.nc.subscribe(subject, {
    callback: (err, msg) => {
      if (err) return;
      r.lastReply = msg.reply || "";
      msg.respond(sc.encode("re:" + msg.string()));
      if (msg.string() === "twice") b.nc.publish(msg.reply, sc.encode("again"));
    },
  });
  return r;
}

async function caseRequest() {
  const a = await open("alice");
  const b = await open("bob");
  const svc = subj("svc");
  const r = responder(b, svc);
  await syncInterest(a, b);
  for (let i = 0; i < 5; i++) {
    const m = await within(a.nc.request(svc, sc.encode(`q${i}`), { timeout: 3000 }), 4000, "request");
    check(m.string() === `re:q${i}`, `reply '${m.string()}', expected 're:q${i}'`);
  }
  check(r.lastReply.startsWith(a.m.inbox + "."),
    `request reply subject '${r.lastReply}' is not under alice's inbox prefix '${a.m.inbox}.'`);

  // A second answer to the same request is refused.
  let errs = b.errors().length;
  const m = await a.nc.request(svc, sc.encode("twice"), { timeout: 3000 });
  check(m.string() === "re:twice", "first answer expected");
  await b.expectViolation(errs, "Publish", r.lastReply);

  // A reply subject bob never received is not his to publish to.
  errs = b.errors().length;
  const forged = `${a.m.inbox}.forged`;
  b.nc.publish(forged, sc.encode("forged"));
  await b.expectViolation(errs, "Publish", forged);

  const again = await a.nc.request(svc, sc.encode("after"), { timeout: 3000 });
  check(again.string() === "re:after", "reply after violations");
  check(!a.errors().length, "requester got errors");
  await a.close();
  await b.close();
}

async function caseHeaders() {
  const a = await open("alice");
  const b = await open("bob");
  const s = subj("hdr");
  const sb = new Sub(b, s);
  await syncInterest(a, b);
  const h = natsHeaders();
  h.set("X-Unibus", "compat");
  h.append("X-Multi", "one");
  h.append("X-Multi", "two");
  h.append("X-Multi", "three four");
  a.nc.publish(s, sc.encode("body"), { headers: h });
  const h2 = natsHeaders();
  h2.set("X-Only", "headers");
  a.nc.publish(s, undefined, { headers: h2 });
  await a.flush();

  let m = await sb.must("message with headers");
  check(m.string() === "body", `payload '${m.string()}', expected 'body'`);
  check(m.headers && m.headers.get("X-Unibus") === "compat", "X-Unibus header lost");
  const v = m.headers.values("X-Multi");
  check(JSON.stringify(v) === JSON.stringify(["one", "two", "three four"]),
    `X-Multi is ${JSON.stringify(v)}, expected ["one","two","three four"]`);
  m = await sb.must("message with headers only");
  check(m.data.length === 0, "payload not empty");
  check(m.headers && m.headers.get("X-Only") === "headers", "X-Only header lost");
  check(!m.headers.hasError && m.headers.code === 0, `taken for a status message (code ${m.headers.code})`);
  await a.close();
  await b.close();
}

async function caseNoresponders() {
  const a = await open("alice");
  const s = subj("nobody");
  const t0 = now();
  let err = null;
  try {
    await a.nc.request(s, sc.encode("anyone?"), { timeout: 5000 });
  } catch (e) {
    err = e;
  }
  const took = now() - t0;
  check(err !== null, "request without responders got an answer");
  check(err.code === ErrorCode.NoResponders, `request to ${s}: ${err.code} ${err.message}, expected 503`);
  check(took < 1000, `no-responders took ${took} ms`);

  // The status message itself on an inbox of alice's own.
  const inbox = `${a.m.inbox}.${args.tok}.manual`;
  const si = new Sub(a, inbox);
  a.nc.publish(s, sc.encode("anyone?"), { reply: inbox });
  const m = await si.must("the 503 status message");
  check(m.data.length === 0, "503 status has a payload");
  check(m.headers && m.headers.code === 503 && m.headers.hasError,
    `status message code ${m.headers && m.headers.code}, expected 503`);
  check(!a.errors().length, "unexpected error");
  await a.close();
}

async function caseAuth() {
  const a = await open("alice");
  const own = `member.${a.m.handle}.${args.tok}.auth`;
  const s = new Sub(a, own);
  a.nc.publish(own, sc.encode("hello"));
  await s.expect(own, "hello", "alice after authenticating");
  await a.close();

  const expectAuth = (err, what) => {
    check(err.code === ErrorCode.AuthorizationViolation || /Authorization Violation/.test(err.message),
      `${what}: refused with ${err.code} (${err.message}), expected Authorization Violation`);
    note(`${what}: ${err.code} (${err.message})`);
  };
  expectAuth(await refused("ghost", {}, "unknown nkey"), "unknown nkey");
  const alice = member("alice");
  const garbage = () => ({ nkey: alice.pub, sig: randomBytes(64).toString("base64url") });
  expectAuth(await refused("alice", { authenticator: garbage }, "bad signature"),
    "member's public key with a bad signature");
  expectAuth(await refused("alice", { noCreds: true }, "no credentials"), "no credentials");
}

async function caseDenyPub() {
  const a = await open("alice");
  const b = await open("bob");
  const denied = [
    `member.${b.m.handle}.${args.tok}.dm`,
    `${b.m.inbox}.${args.tok}.x`,
    `room.${args.room}-other.${args.tok}`,
    `elsewhere.${args.tok}`,
  ];
  const fence = subj("fence");
  const sbm = new Sub(b, denied[0]);
  const sbf = new Sub(b, fence);
  await syncInterest(a, b);
  for (const s of denied) {
    const errs = a.errors().length;
    a.nc.publish(s, sc.encode("denied"));
    await a.expectViolation(errs, "Publish", s);
  }
  a.nc.publish(fence, sc.encode("fence"));
  await sbf.expect(fence, "fence", "fence after denied publishes");
  check(!sbm.drain().length, `bob received alice's denied publish on ${denied[0]}`);
  const ok = subj("ok");
  const sok = new Sub(b, ok);
  await syncInterest(a, b);
  a.nc.publish(ok, sc.encode("still here"));
  await sok.expect(ok, "still here", "room message after violations");
  await a.close();
  await b.close();
}

async function caseDenySub() {
  const a = await open("alice");
  const b = await open("bob");
  const denied = [`member.${b.m.handle}.>`, `${b.m.inbox}.>`, `room.${args.room}-other.>`,
    "room.>", ">"];
  const subs = [];
  for (const s of denied) {
    const errs = a.errors().length;
    const sub = new Sub(a, s);
    subs.push(sub);
    await a.flush();
    await a.expectViolation(errs, "Subscription", s);
    check(sub.errs.length === 1 && sub.errs[0].message.includes(violation("Subscription", s)),
      () => `subscription '${s}' was told ${sub.errs.map((e) => e.message).join("; ") || "nothing"}`);
  }
  {
    const errs = a.errors().length;
    const q = `room.${args.room}-other.${args.tok}`;
    const sub = new Sub(a, q, { queue: "spies" });
    subs.push(sub);
    await a.flush();
    await a.expectViolation(errs, "Subscription", q, "spies");
    const want = `${violation("Subscription", q)} using queue "spies"`;
    check(sub.errs.length === 1 && sub.errs[0].message.includes(want),
      () => `queue subscription was told ${sub.errs.map((e) => e.message).join("; ") || "nothing"}`);
  }
  const fence = subj("fence");
  const sf = new Sub(a, fence);
  await syncInterest(b, a);
  b.nc.publish(`member.${b.m.handle}.${args.tok}.private`, sc.encode("private"));
  b.nc.publish(fence, sc.encode("fence"));
  await sf.expect(fence, "fence", "fence after bob's private message");
  await a.flush();
  for (const s of subs) check(!s.msgs.length, `refused subscription '${s.subject}' delivered a message`);
  const sok = new Sub(a, fence);
  await syncInterest(b, a);
  b.nc.publish(fence, sc.encode("again"));
  await sok.expect(fence, "again", "room message after violations");
  await a.close();
  await b.close();
}

async function caseMaxpayload() {
  const a = await open("alice");
  const b = await open("bob");
  const mp = a.nc.info.max_payload;
  check(mp > 0 && mp <= 64 * 1024 * 1024, `max_payload ${mp}`);
  note(`max_payload ${mp}`);
  const buf = new Uint8Array(mp + 1);
  for (let i = 0; i <= mp; i++) buf[i] = 97 + (i % 26);
  const s = subj("big");
  const sb = new Sub(b, s);
  await syncInterest(a, b);
  a.nc.publish(s, buf.subarray(0, mp));
  await a.flush();
  const m = await sb.must("message at max_payload");
  check(m.data.length === mp && Buffer.compare(Buffer.from(m.data), Buffer.from(buf.subarray(0, mp))) === 0,
    `message at the limit arrived with ${m.data.length} bytes or altered`);

  const oversize = async (what, send) => {
    let threw = null;
    try {
      send();
    } catch (e) {
      threw = e;
    }
    if (threw) {
      check(threw.code === ErrorCode.MaxPayloadExceeded, `${what}: ${threw.code} ${threw.message}`);
      note(`${what}: refused by the client (${threw.code})`);
      return true;
    }
    // Sent: the server must refuse it (and close the connection).
    await a.until(() => a.closedAt !== null || a.errors().length > 0, 3000, `${what} refused`);
    note(`${what}: refused by the server (${a.closedErr && a.closedErr.message})`);
    return false;
  };
  let usable = await oversize("max_payload+1", () => a.nc.publish(s, buf));
  if (usable) {
    const h = natsHeaders();
    h.set("X-Pad", "padding");
    usable = await oversize("headers+payload over the limit",
      () => a.nc.publish(s, buf.subarray(0, mp - 4), { headers: h }));
  }
  if (usable) {
    a.nc.publish(s, sc.encode("small"));
    await a.flush();
    await sb.expect(s, "small", "message after the refusals");
  }
  await b.flush();
  check(!sb.drain().length, "an oversize message was delivered");
  await a.close();
  await b.close();
}

async function caseTls() {
  check(args.ca && args.urls[0].startsWith("tls://"), "the tls case needs --url tls://... and --ca");
  const a = await open("alice");
  const b = await open("bob");
  const s = subj("secure");
  const sb = new Sub(b, s);
  await syncInterest(a, b);
  a.nc.publish(s, sc.encode("over tls"));
  await sb.expect(s, "over tls", "message over TLS");
  const svc = subj("svc");
  responder(b, svc);
  await syncInterest(a, b);
  const m = await a.nc.request(svc, sc.encode("tls"), { timeout: 3000 });
  check(m.string() === "re:tls", "reply over TLS");
  if (args.wrongCa) {
    const err = await refused("alice", { ca: args.wrongCa }, "untrusted CA");
    note(`untrusted CA refused: ${err.code} (${err.message})`);
  }
  const err = await refused("alice", { servername: "not-this-server.invalid" }, "wrong host name");
  note(`wrong host name refused: ${err.code} (${err.message})`);
  await a.close();
  await b.close();
}

// Prints READY and waits for the harness's line on stdin.
async function handshake(what) {
  process.stdout.write(`READY ${what}\n`);
  const rl = createInterface({ input: process.stdin });
  const it = rl[Symbol.asyncIterator]();
  const r = await within(it.next(), 20000, "the harness's go-ahead");
  rl.close();
  check(!r.done, "harness closed stdin");
  return now();
}

async function caseRemoved() {
  const v = await open("victim", { reconnect: true });
  await v.flush();
  const t0 = await handshake("remove-member");
  const disc = () => v.events.find((e) => e.type === "disconnect") || (v.closedAt !== null ? { at: v.closedAt } : null);
  await v.until(() => disc() !== null, 1100, "disconnect of the removed member");
  const at = disc().at - t0;
  check(at <= 1000, `disconnected ${at} ms after the removal`);
  note(`disconnected ${at} ms after the removal was committed`);
  await v.until(() => v.closedAt !== null, 5000,
    "the removed member's connection to end (it is still reconnecting)");
  check(!v.events.some((e) => e.type === "reconnect"), "the removed member reconnected");
  note(`closed: ${v.closedErr ? `${v.closedErr.code} (${v.closedErr.message})` : "no error"}`);
  const err = await refused("victim", {}, "the removed member reconnecting");
  check(err.code === ErrorCode.AuthorizationViolation,
    `reconnect refused with ${err.code} (${err.message}), expected Authorization Violation`);
}

async function caseRoomRemoved() {
  const a = await open("alice");
  const l = await open("leaver");
  const c = await open("carol");
  const probe = subj("probe.t");
  const sl = new Sub(l, `room.${args.room}.${args.tok}.>`);
  const scar = new Sub(c, `room.${args.room}.${args.tok}.>`);
  await syncInterest(a, l);
  await syncInterest(a, c);
  a.nc.publish(probe, sc.encode("before"));
  await a.flush();
  await sl.expect(probe, "before", "leaver receiving the room before removal");
  await scar.expect(probe, "before", "carol receiving the room");

  const t0 = await handshake("remove-from-room");
  let sent = 0;
  while (now() - t0 < 1500) {
    a.nc.publish(probe, sc.encode(String(now() - t0)));
    sent++;
    await a.flush();
    await delay(50);
  }
  for (let i = 0; i < sent; i++) await scar.must("carol receiving the probes");
  await l.flush();
  const got = sl.drain().map((m) => Number(m.string()));
  const late = got.filter((t) => t > 1000);
  check(!late.length, `the leaver still received ${late.length} room messages published more than 1 s after the removal (last at ${got[got.length - 1]} ms)`);
  note(`last room message received ${got.length ? got[got.length - 1] : -1} ms after the removal`);

  const errs = l.errors().length;
  l.nc.publish(probe, sc.encode("after"));
  await l.expectViolation(errs, "Publish", probe);
  const own = `member.${l.m.handle}.${args.tok}.still`;
  const so = new Sub(l, own);
  l.nc.publish(own, sc.encode("still here"));
  await so.expect(own, "still here", "leaver's own subject after the removal");
  check(!l.events.some((e) => e.type === "disconnect"), "the leaver was disconnected");
  await a.close();
  await l.close();
  await c.close();
}

const CASES = {
  pubsub: casePubsub,
  wildcards: caseWildcards,
  queue: caseQueue,
  request: caseRequest,
  headers: caseHeaders,
  noresponders: caseNoresponders,
  auth: caseAuth,
  deny_pub: caseDenyPub,
  deny_sub: caseDenySub,
  maxpayload: caseMaxpayload,
  tls: caseTls,
  removed: caseRemoved,
  room_removed: caseRoomRemoved,
};

parseArgs(process.argv.slice(2));
CASE = args.case;
try {
  await CASES[args.case]();
  process.stdout.write(`ok js/${CASE}\n`);
  process.exit(0);
} catch (err) {
  process.stderr.write(`FAIL js/${CASE}: ${err instanceof Failure ? err.message : err.stack || err}\n`);
  process.exit(1);
}
