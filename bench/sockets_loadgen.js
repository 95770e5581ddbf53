"use strict";
// The gateway-sockets rows' load generator (bench/gateway_sockets.py starts it; not a test).
//
//   node bench/sockets_loadgen.js <modules dir> <gateway url> <tokens file> <run tag>
//
// Opens one Socket.IO client (socket.io-client from <modules dir>/node_modules, websocket
// transport only, no reconnection) per line of <tokens file> ("<recipient>\t<token>"), at most
// CONNECTING handshakes in flight, and prints one JSON line when all are connected or refused
// (or the connect deadline passes). Then it obeys JSON commands on stdin, one a line:
//   {"cmd": "phase", "name": N, "expect": K}  count the `notification`s of phase N from now;
//   {"cmd": "count", "name": N}              print how many of phase N arrived so far;
//   {"cmd": "report", "name": N}             print that phase's receipts and latencies;
//   {"cmd": "close"}                         disconnect every client, print, exit.
// A receipt's latency is the receive time minus the `sent_ms` the publisher put in the entry's
// data (both the host's wall clock, epoch ms, sub-millisecond). Every wait is bounded: the
// connect deadline, the lifetime cap, and stdin's end (the bench went away) ends the process.
const path = require("path");
const fs = require("fs");
const readline = require("readline");
const { createRequire } = require("module");
const { performance } = require("perf_hooks");

const [modulesDir, url, tokensFile, runTag] = process.argv.slice(2);
if (!runTag) {
    process.stderr.write("usage: sockets_loadgen.js <modules dir> <url> <tokens file> <run tag>\n");
    process.exit(2);
}
const { io } = createRequire(path.join(path.resolve(modulesDir), "/"))("socket.io-client");

const CONNECTING = Number(process.env.LOADGEN_CONNECTING || 200); // handshakes in flight
const CONNECT_DEADLINE_MS = Number(process.env.LOADGEN_CONNECT_DEADLINE_S || 180) * 1000;
const HANDSHAKE_TIMEOUT_MS = 20000; // one client's
const LIFETIME_MS = Number(process.env.LOADGEN_LIFETIME_S || 900) * 1000;
const MAX_SAMPLES = 2_000_000; // latencies kept per phase (bounded memory)
const MAX_SECONDS = 600; // the per-second worst latencies kept per phase
// LOADGEN_PER_MESSAGE_DEFLATE=0: don't offer permessage-deflate (browsers and socket.io-client
// offer it by default; a diagnostic knob: what the server's deflate state costs).
const DEFLATE = process.env.LOADGEN_PER_MESSAGE_DEFLATE !== "0";

const nowMs = () => performance.timeOrigin + performance.now();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

setTimeout(() => {
    out({ event: "error", error: `lifetime cap ${LIFETIME_MS / 1000} s reached` });
    process.exit(3);
}, LIFETIME_MS).unref();

const clients = fs
    .readFileSync(tokensFile, "utf8")
    .split("\n")
    .filter((l) => l)
    .map((l) => {
        const [recipient, token] = l.split("\t");
        return { recipient, token, socket: null, ok: false };
    });

const phases = new Map(); // name -> {received, duplicates, lat: Float64Array, n, seen: Set}
let stray = 0; // bench entries of no phase being counted (late, or of a closed phase)
let misrouted = 0; // an entry for another recipient than the connection's
let dropped = 0; // connections lost after connecting (server or transport)
const dropReasons = {};
let closing = false; // disconnects from now on are ours

function onNotification(client, entry) {
    const t = nowMs();
    const d = entry && entry.data;
    if (!d || d.bench !== runTag) return;
    if (entry.recipient !== client.recipient) misrouted++;
    const ph = phases.get(d.phase);
    if (!ph) {
        stray++;
        return;
    }
    if (ph.seen.has(entry.id)) {
        ph.duplicates++;
        return;
    }
    ph.seen.add(entry.id);
    ph.received++;
    const ms = t - d.sent_ms;
    if (ph.n < ph.lat.length) ph.lat[ph.n++] = ms;
    const sec = Math.floor((d.sent_ms - ph.t0) / 1000); // by send second, from the phase's start
    if (sec >= 0 && sec < ph.perSecondMax.length) {
        ph.perSecondMax[sec] = Math.max(ph.perSecondMax[sec], ms);
    }
}

function quantile(sorted, q) {
    if (!sorted.length) return null;
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function connectAll() {
    return new Promise((resolve) => {
        const t0 = nowMs();
        const handshakes = [];
        const errors = {};
        let next = 0;
        let ok = 0;
        let failed = 0;
        let done = false;
        const finish = (why) => {
            if (done) return;
            done = true;
            clearTimeout(deadline);
            handshakes.sort((a, b) => a - b);
            resolve({
                event: "connected",
                why,
                per_message_deflate: DEFLATE,
                clients: clients.length,
                ok,
                failed,
                pending: clients.length - ok - failed,
                seconds: (nowMs() - t0) / 1000,
                handshake_p50_ms: quantile(handshakes, 0.5),
                handshake_p99_ms: quantile(handshakes, 0.99),
                handshake_max_ms: handshakes.length ? handshakes[handshakes.length - 1] : null,
                errors,
                // refused or still pending: the publisher addresses the others only
                unconnected: clients.filter((c) => !c.ok).map((c) => c.recipient),
            });
        };
        const deadline = setTimeout(() => finish("deadline"), CONNECT_DEADLINE_MS);
        const start = () => {
            if (done || next >= clients.length) return;
            const c = clients[next++];
            const t = nowMs();
            let settled = false;
            const s = io(url, {
                transports: ["websocket"],
                forceNew: true,
                reconnection: false,
                timeout: HANDSHAKE_TIMEOUT_MS,
                auth: { token: c.token },
                ...(DEFLATE ? {} : { perMessageDeflate: false }),
            });
            c.socket = s;
            s.on("notification", (entry) => onNotification(c, entry));
            s.on("connect", () => {
                if (settled) return;
                settled = true;
                c.ok = true;
                ok++;
                handshakes.push(nowMs() - t);
                if (ok + failed === clients.length) finish("all");
                else start();
            });
            s.on("connect_error", (err) => {
                if (settled) return;
                settled = true;
                failed++;
                const m = String((err && err.message) || err).slice(0, 120);
                errors[m] = (errors[m] || 0) + 1;
                s.close();
                if (ok + failed === clients.length) finish("all");
                else start();
            });
            s.on("disconnect", (reason) => {
                if (!settled || closing) return;
                dropped++;
                dropReasons[reason] = (dropReasons[reason] || 0) + 1;
            });
        };
        if (!clients.length) finish("all");
        for (let i = 0; i < Math.min(CONNECTING, clients.length); i++) start();
    });
}

function report(name) {
    const ph = phases.get(name);
    if (!ph) return { event: "report", name, error: "no such phase" };
    const lat = ph.lat.subarray(0, ph.n).sort();
    const perSecond = Array.from(ph.perSecondMax);
    while (perSecond.length && perSecond[perSecond.length - 1] < 0) perSecond.pop();
    const first = perSecond.findIndex((v) => v >= 0);
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    return {
        event: "report",
        name,
        expect: ph.expect,
        received: ph.received,
        duplicates: ph.duplicates,
        samples: ph.n,
        p50_ms: quantile(lat, 0.5),
        p90_ms: quantile(lat, 0.9),
        p99_ms: quantile(lat, 0.99),
        p999_ms: quantile(lat, 0.999),
        max_ms: lat.length ? lat[lat.length - 1] : null,
        min_ms: lat.length ? lat[0] : null,
        // the worst latency of the messages sent in each second of the phase (-1: none)
        start_epoch_ms: ph.t0 + Math.max(0, first) * 1000, // second 0 of per_second_max_ms
        per_second_max_ms: first < 0 ? [] : perSecond.slice(first).map((v) => Math.round(v * 10) / 10),
        stray,
        misrouted,
        dropped,
        drop_reasons: dropReasons,
        connected: clients.filter((c) => c.socket && c.socket.connected).length,
        rss_mb: mem.rss / 2 ** 20,
        cpu_s: (cpu.user + cpu.system) / 1e6,
    };
}

async function main() {
    out(await connectAll());
    const rl = readline.createInterface({ input: process.stdin });
    rl.on("line", (line) => {
        let msg;
        try {
            msg = JSON.parse(line);
        } catch {
            out({ event: "error", error: `not JSON: ${line.slice(0, 80)}` });
            return;
        }
        if (msg.cmd === "phase") {
            const expect = Math.max(0, Math.min(Number(msg.expect) || 0, MAX_SAMPLES));
            phases.set(msg.name, {
                expect,
                received: 0,
                duplicates: 0,
                lat: new Float64Array(expect || 1),
                n: 0,
                seen: new Set(),
                t0: nowMs(),
                perSecondMax: new Float64Array(MAX_SECONDS).fill(-1),
            });
            out({ event: "phase", name: msg.name });
        } else if (msg.cmd === "count") {
            const ph = phases.get(msg.name);
            out({ event: "count", name: msg.name, received: ph ? ph.received : 0 });
        } else if (msg.cmd === "report") {
            const r = report(msg.name);
            phases.delete(msg.name); // its late arrivals count as stray
            out(r);
        } else if (msg.cmd === "close") {
            closing = true;
            const t0 = nowMs();
            for (const c of clients) if (c.socket) c.socket.close();
            out({ event: "closed", seconds: (nowMs() - t0) / 1000 });
            setTimeout(() => process.exit(0), 200);
        }
    });
    rl.on("close", () => process.exit(closing ? 0 : 4)); // the bench went away
}

main().catch((err) => {
    out({ event: "error", error: String((err && err.stack) || err) });
    process.exit(1);
});
