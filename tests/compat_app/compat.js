// A stand-in for the ORIGINAL rover app, as ../../../shared/spec/original-app-protocol.md
// describes it: the page is the WebSocket client, it knows nothing of LunarFleet (no hello, no
// token, no hooks the trainer relies on), it is real-time and it has its own 1 s watchdog.
//
//  - ?wsPort=P[&maxSteps=M]: auto-connect to ws://localhost:P, 10 tries 1 s apart, then
//    start training on its own (reset_complete).
//  - no wsPort: wait for a click on "Connect to Python", which connects to port 8765, or to
//    window.COMPAT_PORT / <body data-ws-port="..."> when set (tests set window.COMPAT_PORT with
//    an init script so they never touch 8765).
//  - at most one action per animation frame (~60 Hz), each answered by exactly one `state`.
//  - watchdog: no `action` for 1 s while training -> restart_request; 2 s later the socket is
//    closed; 1 s after that the page reconnects and sends a fresh reset_complete.
//  - a socket the server closes is NOT reopened by the page (only the watchdog reconnects), as a
//    plain app would do: the trainer's side has to cope (the tab pool reloads such a tab).
//
// window.compat holds counters for tests to read; nothing on the Python side uses it.
(function () {
  'use strict';

  const CONNECT_TRIES = 10;
  const CONNECT_RETRY_MS = 1000;
  const WATCHDOG_MS = 1000;
  const WATCHDOG_CLOSE_MS = 2000;
  const WATCHDOG_RECONNECT_MS = 1000;
  const DEFAULT_PORT = 8765;

  // ---- a simple rover model ----------------------------------------------------------------
  const W = 6.8;
  const H = 5.0;
  const DIAG = Math.hypot(W, H);
  const TOP_SPEED = 0.5; // m/s
  const TOP_TURN = 1.0; // rad/s
  const ROVER_RADIUS = 0.45;
  const CONSTRUCTION = { x: 5.3, y: 0.75, w: 1.7, h: 1.1 };
  const BERM = { x: 5.3, y: 0.75, w: 0.8, h: 0.4 };
  const EXCAVATION_X = 2.2;
  const OBSTACLE_ZONE = { x0: 2.4, x1: 4.4 };

  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const wrap = (a) => {
    while (a > Math.PI) a -= 2 * Math.PI;
    while (a <= -Math.PI) a += 2 * Math.PI;
    return a;
  };
  const inRect = (p, r) => Math.abs(p.x - r.x) <= r.w / 2 && Math.abs(p.y - r.y) <= r.h / 2;

  const sim = {
    maxSteps: 5000,
    timescale: 1.0,
    reset() {
      this.x = 0.8 + Math.random() * 0.8;
      this.y = 1.0 + Math.random() * 3.0;
      this.heading = (Math.random() * 2 - 1) * Math.PI;
      this.speed = 0;
      this.held = 0;
      this.lastDig = 0;
      this.steps = 0;
      this.totalReward = 0;
      this.collected = 0;
      this.depositedConstruction = 0;
      this.depositedBerm = 0;
      this.collision = false;
      this.obstacles = [];
      for (let i = 0; i < 6; i++) {
        this.obstacles.push({
          x: OBSTACLE_ZONE.x0 + Math.random() * (OBSTACLE_ZONE.x1 - OBSTACLE_ZONE.x0),
          y: 0.5 + Math.random() * (H - 1.0),
          r: 0.1 + Math.random() * 0.15,
        });
      }
      this.orbs = [];
      for (let i = 0; i < 15; i++) this.orbs.push({ x: 0.3 + Math.random() * 1.8, y: 0.3 + Math.random() * (H - 0.6) });
    },
    zone() {
      const p = { x: this.x, y: this.y };
      if (inRect(p, BERM)) return 'berm';
      if (inRect(p, CONSTRUCTION)) return 'construction';
      if (this.x < EXCAVATION_X) return 'excavation';
      if (this.x >= OBSTACLE_ZONE.x0 && this.x <= OBSTACLE_ZONE.x1) return 'obstacle';
      return 'transit';
    },
    polar(px, py) {
      const dx = px - this.x;
      const dy = py - this.y;
      return [Math.hypot(dx, dy), wrap(Math.atan2(dy, dx) - this.heading)];
    },
    grabbable(orb) {
      const [d, a] = this.polar(orb.x, orb.y);
      return d < 0.9 && Math.abs(a) < 0.6;
    },
    step(action) {
      const speedCmd = clamp(Number(action[0]) || 0, -1, 1);
      const turnCmd = clamp(Number(action[1]) || 0, -1, 1);
      const dig = clamp(Number(action[2]) || 0, 0, 1);
      const dt = this.timescale / 60;
      const before = this.polar(CONSTRUCTION.x, CONSTRUCTION.y)[0];
      this.speed += clamp(speedCmd * TOP_SPEED - this.speed, -1.0 * dt, 1.0 * dt);
      this.heading = wrap(this.heading + turnCmd * TOP_TURN * dt);
      this.x += Math.cos(this.heading) * this.speed * dt;
      this.y += Math.sin(this.heading) * this.speed * dt;
      let reward = -0.001 + 0.002 * Math.max(0, this.speed / TOP_SPEED);
      if (dig > 0.5 && this.lastDig <= 0.5) {
        const zone = this.zone();
        if (this.held > 0 && (zone === 'construction' || zone === 'berm')) {
          if (zone === 'berm') this.depositedBerm += this.held;
          else this.depositedConstruction += this.held;
          reward += this.held;
          this.held = 0;
        } else if (this.held < 15) {
          const i = this.orbs.findIndex((o) => this.grabbable(o));
          if (i >= 0) {
            this.orbs.splice(i, 1);
            this.held += 1;
            this.collected += 1;
            reward += 0.2;
          }
        }
      }
      this.lastDig = dig;
      if (this.held > 0) reward += 0.05 * (before - this.polar(CONSTRUCTION.x, CONSTRUCTION.y)[0]);
      const hitWall = this.x < ROVER_RADIUS || this.x > W - ROVER_RADIUS || this.y < ROVER_RADIUS || this.y > H - ROVER_RADIUS;
      const hitRock = this.obstacles.some((o) => Math.hypot(o.x - this.x, o.y - this.y) < o.r + ROVER_RADIUS);
      if (hitWall || hitRock) {
        this.collision = true;
        reward -= 1.0;
      }
      this.x = clamp(this.x, 0, W);
      this.y = clamp(this.y, 0, H);
      this.steps += 1;
      this.totalReward += reward;
      const done = this.collision || this.steps >= this.maxSteps;
      return { reward, done };
    },
    observation() {
      const obs = [
        (this.x / W) * 2 - 1,
        (this.y / H) * 2 - 1,
        this.heading / Math.PI,
        this.speed / TOP_SPEED,
        this.held > 0 ? 1 : 0,
        this.held / 15,
      ];
      const zone = this.zone();
      obs.push(zone === 'excavation' ? 1 : 0, zone === 'construction' || zone === 'berm' ? 1 : 0, zone === 'berm' ? 1 : 0, zone === 'obstacle' ? 1 : 0);
      let nearest = null;
      let nearestD = Infinity;
      for (const o of this.orbs) {
        const d = Math.hypot(o.x - this.x, o.y - this.y);
        if (d < nearestD) [nearest, nearestD] = [o, d];
      }
      if (nearest) {
        const [d, a] = this.polar(nearest.x, nearest.y);
        obs.push(d / DIAG, a / Math.PI, this.grabbable(nearest) ? 1 : 0);
      } else obs.push(1, 0, 0);
      const rocks = this.obstacles
        .map((o) => [...this.polar(o.x, o.y), o.r])
        .sort((p, q) => p[0] - q[0])
        .slice(0, 5);
      for (let i = 0; i < 5; i++) {
        const r = rocks[i];
        if (r) obs.push(r[0] / DIAG, r[1] / Math.PI, r[2] / 0.25);
        else obs.push(1, 0, 0);
      }
      const [cd, ca] = this.polar(CONSTRUCTION.x, CONSTRUCTION.y);
      obs.push(cd / DIAG, ca / Math.PI);
      return obs.map((v) => clamp(v, -1, 1));
    },
    info() {
      return {
        episode_length: this.steps,
        orbs_collected: this.collected,
        orbs_deposited_construction: this.depositedConstruction,
        orbs_deposited_berm: this.depositedBerm,
        collision_occurred: this.collision,
        zone: this.zone(),
        total_reward: this.totalReward,
      };
    },
  };

  // ---- the connection, the way the original app runs it ------------------------------------
  const params = new URLSearchParams(location.search);
  const urlPort = parseInt(params.get('wsPort') || '', 10);
  const urlMaxSteps = parseInt(params.get('maxSteps') || '', 10);
  if (urlMaxSteps > 0) sim.maxSteps = urlMaxSteps;

  const stats = {
    port: null,
    connected: false,
    training: false,
    connects: 0,
    connectAttempts: 0,
    actions: 0,
    states: 0,
    resets: 0,
    restartRequests: 0,
    watchdogCloses: 0,
    serverCloses: 0,
    unknown: 0,
    maxActionsPerFrame: 0,
    parallelText: '',
    checkpointText: '',
    received: {},
  };
  window.compat = stats;

  let socket = null;
  let queue = []; // actions received, applied one per animation frame
  let lastActionAt = 0;
  let watchdogArmed = false;

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function sendReset() {
    sim.reset();
    stats.resets += 1;
    send({ type: 'reset_complete', observation: sim.observation(), reward: 0, done: false, info: sim.info() });
  }

  function connect(port, triesLeft) {
    stats.port = port;
    stats.connectAttempts += 1;
    let opened = false;
    const ws = new WebSocket(`ws://localhost:${port}`);
    socket = ws;
    ws.onopen = () => {
      opened = true;
      stats.connected = true;
      stats.connects += 1;
      queue = [];
      startTraining();
    };
    ws.onmessage = (event) => onMessage(event.data);
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      stats.connected = false;
      stats.training = false;
      queue = [];
      if (!opened) {
        if (triesLeft > 1) setTimeout(() => connect(port, triesLeft - 1), CONNECT_RETRY_MS);
      } else if (!watchdogArmed) {
        stats.serverCloses += 1; // the server closed on us: stay disconnected (a person would reload)
      }
    };
  }

  function startTraining() {
    stats.training = true;
    watchdogArmed = false;
    lastActionAt = performance.now();
    sendReset();
  }

  function onMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const type = message && message.type;
    stats.received[type] = (stats.received[type] || 0) + 1;
    switch (type) {
      case 'action':
        stats.actions += 1;
        lastActionAt = performance.now();
        queue.push(message.action);
        break;
      case 'reset_request':
      case 'ready_to_resume':
        queue = [];
        sendReset();
        break;
      case 'set_timescale':
        if (Number(message.timescale) > 0) sim.timescale = Number(message.timescale);
        break;
      case 'set_config':
        if (Number(message.max_episode_steps) > 0) sim.maxSteps = Number(message.max_episode_steps);
        break;
      case 'parallel_training_info':
        stats.parallelText = `Parallel Training: ${message.env_count} environments`;
        document.getElementById('parallel').textContent = stats.parallelText;
        break;
      case 'checkpoint_info':
        stats.checkpointText = `Checkpoint: ${message.checkpoint_name} (${message.checkpoint_steps} steps)`;
        document.getElementById('checkpoint').textContent = stats.checkpointText;
        break;
      default:
        stats.unknown += 1; // unknown types are ignored
    }
  }

  function frame() {
    let applied = 0;
    if (queue.length > 0 && socket && socket.readyState === WebSocket.OPEN) {
      const action = queue.shift();
      const { reward, done } = sim.step(Array.isArray(action) ? action : [0, 0, 0]);
      send({ type: 'state', observation: sim.observation(), reward, done, info: sim.info() });
      stats.states += 1;
      applied = 1;
    }
    stats.maxActionsPerFrame = Math.max(stats.maxActionsPerFrame, applied);
    draw();
    requestAnimationFrame(frame);
  }

  function watchdog() {
    if (!stats.training || watchdogArmed || performance.now() - lastActionAt < WATCHDOG_MS) return;
    watchdogArmed = true;
    stats.restartRequests += 1;
    const ws = socket;
    const port = stats.port;
    send({ type: 'restart_request' });
    setTimeout(() => {
      stats.training = false;
      if (ws && socket === ws) {
        stats.watchdogCloses += 1;
        ws.close();
      }
      setTimeout(() => connect(port, CONNECT_TRIES), WATCHDOG_RECONNECT_MS);
    }, WATCHDOG_CLOSE_MS);
  }

  // ---- drawing (the original draws every frame; this is a cheap version) ------------------
  const canvas = document.getElementById('arena');
  const ctx = canvas.getContext('2d');
  const scale = canvas.width / W;
  function draw() {
    if (sim.steps === undefined) return;
    ctx.fillStyle = '#2a2a2a';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = '#3b4a3b';
    ctx.fillRect(0, 0, EXCAVATION_X * scale, canvas.height);
    ctx.fillStyle = '#4a4a2b';
    ctx.fillRect((CONSTRUCTION.x - CONSTRUCTION.w / 2) * scale, (CONSTRUCTION.y - CONSTRUCTION.h / 2) * scale, CONSTRUCTION.w * scale, CONSTRUCTION.h * scale);
    ctx.fillStyle = '#888';
    for (const o of sim.obstacles) {
      ctx.beginPath();
      ctx.arc(o.x * scale, o.y * scale, o.r * scale, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.fillStyle = '#6cf';
    for (const o of sim.orbs) ctx.fillRect(o.x * scale - 1, o.y * scale - 1, 3, 3);
    ctx.save();
    ctx.translate(sim.x * scale, sim.y * scale);
    ctx.rotate(sim.heading);
    ctx.fillStyle = sim.collision ? '#f55' : '#fc3';
    ctx.fillRect(-0.75 * scale, -0.5 * scale, 1.5 * scale, 1.0 * scale);
    ctx.restore();
    document.getElementById('status').textContent =
      (stats.connected ? `Connected to Python on port ${stats.port}` : 'Not connected') +
      `\nSteps: ${sim.steps}  Reward: ${sim.totalReward.toFixed(2)}  Zone: ${sim.zone()}`;
  }

  // ---- start ---------------------------------------------------------------------------------
  sim.reset();
  requestAnimationFrame(frame);
  setInterval(watchdog, 100);
  const button = document.getElementById('connect');
  if (urlPort > 0) {
    button.hidden = true;
    connect(urlPort, CONNECT_TRIES);
  } else {
    button.addEventListener('click', () => {
      button.hidden = true;
      const override = window.COMPAT_PORT || parseInt(document.body.dataset.wsPort || '', 10);
      connect(override > 0 ? override : DEFAULT_PORT, CONNECT_TRIES);
    });
  }
})();
