// The meeting page's client (GET /meet/{room}): Cloudflare's own browser libraries
// joining a ray-rooms room the way Orange Meets does.
//
// - partysocket: the room's WebSocket (/parties/rooms/{room}?_pk=<id>); identity comes
//   from the gateway's cookie or proxy header, never from this script.
// - partytracks: the Calls session through the gateway's /partytracks proxy; it pushes
//   the mic and an "AI" track (the mic while the talk button is held, silence
//   otherwise, as Orange's AiPushToTalkButton does) and pulls every other user's audio.
// - The room protocol: userUpdate (our tracks, mic state), heartbeat every 5 s,
//   enableAi / disableAi, requestAiControl (with the AI track) / relenquishAiControl,
//   userLeft on unload; roomState, error and muteMic come back, and aiTranscript: the
//   AI's transcript lines, shown as live captions (the newest six).
//
// For tests and operators, window.roomsMeeting exposes the last roomState, the errors
// shown, and per pulled user the dominant frequency (Hz) and level heard (WebAudio
// AnalyserNode).
import PartySocket from "partysocket";
import { PartyTracks, getMic } from "partytracks/client";
import { BehaviorSubject, combineLatest, of, shareReplay, switchMap } from "rxjs";

const config = JSON.parse(document.getElementById("rooms-config").textContent);
// the gateway's route prefix ("" at /): every URL of the page starts with it
const base = (config.base || "").replace(/\/+$/, "");
const connectionId = crypto.randomUUID();
const $ = (id) => document.getElementById(id);

const meeting = {
  id: connectionId,
  name: config.name,
  room: config.room,
  state: { users: [], ai: { enabled: false } },
  errors: [],
  heard: {},
  published: null,
  captions: [],
};
window.roomsMeeting = meeting;

function showError(text) {
  meeting.errors.push(String(text));
  const item = document.createElement("li");
  item.textContent = String(text);
  $("errors").prepend(item);
  while ($("errors").children.length > 5) $("errors").lastChild.remove();
}

// The AI's transcript as captions: "<speaker>: <text>", the newest last; a line the page
// already shows (a reconnect sends the recent ones again) is not shown twice.
function caption(line) {
  if (meeting.captions.some((c) => c.id === line.id)) return;
  meeting.captions.push({ id: line.id, speaker: line.speaker, name: line.name, text: line.text });
  const item = document.createElement("li");
  item.textContent = `${line.name || line.speaker || "?"}: ${line.text}`;
  $("captions").append(item);
  while ($("captions").children.length > 6) $("captions").firstChild.remove();
}

window.addEventListener("error", (event) => showError(event.message));
window.addEventListener("unhandledrejection", (event) =>
  showError(event.reason && event.reason.message ? event.reason.message : String(event.reason)));

// ---- the room's socket ---------------------------------------------------------------

const socket = new PartySocket({
  host: location.host,
  protocol: location.protocol === "https:" ? "wss" : "ws",
  party: "rooms",
  prefix: `${base.replace(/^\//, "")}${base ? "/" : ""}parties`,
  room: config.room,
  id: connectionId,
});
const send = (message) => socket.send(JSON.stringify(message));

socket.addEventListener("open", () => { $("status").textContent = "connected"; announce(); });
socket.addEventListener("close", (event) => {
  $("status").textContent = `disconnected (${event.code}${event.reason ? ": " + event.reason : ""})`;
});
socket.addEventListener("message", (event) => {
  const message = JSON.parse(event.data);
  switch (message.type) {
    case "roomState":
      meeting.state = message.state;
      render();
      pullOthers();
      break;
    case "error":
      showError(message.error);
      break;
    case "muteMic":
      mic.stopBroadcasting();
      break;
    case "aiTranscript":
      caption(message);
      break;
    default:
      break;
  }
});
setInterval(() => send({ type: "heartbeat" }), 5000);
window.addEventListener("beforeunload", () => send({ type: "userLeft" }));

// ---- media: push the mic and the AI track, pull the others ---------------------------

const partyTracks = new PartyTracks({ prefix: `${base}/partytracks` });
meeting.calls = partyTracks; // its .history holds the last Calls requests (debugging)
partyTracks.sessionError$.subscribe((error) => showError(`calls: ${error}`));

const mic = getMic({ broadcasting: true });
mic.error$.subscribe((error) => showError(`microphone: ${error.message || error}`));

// Silence for the AI track while the talk button is up: a 20 Hz oscillator at zero gain
// (an unconnected destination sends no packets, and partytracks publishes a track only
// once it has sent some), as Orange's inaudibleAudioTrack$ does.
const audioContext = new AudioContext();
const silentSource = audioContext.createOscillator();
silentSource.frequency.value = 20;
const mute = audioContext.createGain();
mute.gain.value = 0;
const silentSink = audioContext.createMediaStreamDestination();
silentSource.connect(mute).connect(silentSink);
silentSource.start();
const silence = silentSink.stream.getAudioTracks()[0];
// Browsers start an AudioContext only after a user gesture (unless allowed by policy).
for (const type of ["click", "keydown", "pointerdown"]) {
  document.addEventListener(type, () => audioContext.resume().catch(() => {}), { once: true });
}
const holding$ = new BehaviorSubject(false);

// One capture of the mic for both pushes (a second subscription would open a second
// capture, and the first may fall silent).
const micSource$ = mic.broadcastTrack$.pipe(shareReplay({ bufferSize: 1, refCount: true }));
const micMetadata$ = partyTracks.push(micSource$);
const aiMetadata$ = partyTracks.push(
  holding$.pipe(switchMap((held) => (held ? micSource$ : of(silence)))),
);

let micTrack = null;
let aiTrack = null;
let micOn = true;
combineLatest([micMetadata$, mic.isBroadcasting$]).subscribe(([metadata, broadcasting]) => {
  micTrack = metadata;
  micOn = broadcasting;
  meeting.published = metadata;
  announce();
  render();
});
aiMetadata$.subscribe((metadata) => { aiTrack = metadata; });

function announce() {
  if (!micTrack || socket.readyState !== WebSocket.OPEN) return;
  send({
    type: "userUpdate",
    user: {
      id: connectionId,
      name: config.name,
      joined: true,
      raisedHand: false,
      speaking: false,
      transceiverSessionId: micTrack.sessionId,
      tracks: { audio: `${micTrack.sessionId}/${micTrack.trackName}`, audioEnabled: micOn },
    },
  });
}

const pulled = new Map(); // "<sessionId>/<trackName>" -> {subscription, userId}

function pullOthers() {
  const wanted = new Map();
  for (const user of meeting.state.users) {
    if (user.id === connectionId || !user.tracks || !user.tracks.audio) continue;
    if (user.id !== "ai" && !user.joined) continue;
    wanted.set(user.tracks.audio, user.id);
  }
  for (const [ref, entry] of pulled) {
    if (!wanted.has(ref)) {
      entry.subscription.unsubscribe();
      entry.element.remove();
      pulled.delete(ref);
      delete meeting.heard[entry.userId];
    }
  }
  for (const [ref, userId] of wanted) {
    if (pulled.has(ref)) continue;
    const [sessionId, trackName] = ref.split("/");
    const element = document.createElement("audio");
    element.autoplay = true;
    document.body.append(element);
    const track$ = partyTracks.pull(of({ sessionId, trackName, location: "remote" }));
    const subscription = track$.subscribe({
      next: (track) => listen(userId, track, element),
      error: (error) => showError(`pulling ${userId}: ${error.message || error}`),
    });
    pulled.set(ref, { subscription, userId, element });
  }
}

function listen(userId, track, element) {
  const stream = new MediaStream([track]);
  element.srcObject = stream; // Chromium feeds WebAudio from a remote track only when played
  element.play().catch(() => {});
  audioContext.resume().catch(() => {});
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = 8192;
  audioContext.createMediaStreamSource(stream).connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  const samples = new Float32Array(analyser.fftSize);
  const measure = () => {
    if (!meeting.heard[userId] || meeting.heard[userId].track !== track.id) return;
    analyser.getFloatFrequencyData(bins);
    analyser.getFloatTimeDomainData(samples);
    let best = 1;
    for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    let energy = 0;
    for (const s of samples) energy += s * s;
    const entry = meeting.heard[userId];
    entry.level = Math.sqrt(energy / samples.length);
    entry.freq = entry.level > 0.005 ? (best * audioContext.sampleRate) / analyser.fftSize : 0;
    renderHeard(userId);
  };
  meeting.heard[userId] = { track: track.id, freq: 0, level: 0 };
  const timer = setInterval(() => {
    if (!meeting.heard[userId] || meeting.heard[userId].track !== track.id) clearInterval(timer);
    else measure();
  }, 250);
}

// ---- controls ------------------------------------------------------------------------

$("mic").addEventListener("click", () => {
  if (micOn) mic.stopBroadcasting(); else mic.startBroadcasting();
});
$("ai-toggle").addEventListener("click", () => {
  send(meeting.state.ai.enabled ? { type: "disableAi" } : { type: "enableAi" });
});

function press() {
  if (holding$.value || !meeting.state.ai.enabled) return;
  holding$.next(true);
  if (aiTrack) send({ type: "requestAiControl", track: aiTrack });
  else showError("the AI track is not published yet");
}
function release() {
  if (!holding$.value) return;
  holding$.next(false);
  send({ type: "relenquishAiControl" });
}
const talk = $("ai-talk");
talk.addEventListener("pointerdown", press);
talk.addEventListener("pointerup", release);
talk.addEventListener("pointerleave", release);
document.addEventListener("keydown", (e) => { if (e.key === "a" && !e.repeat) press(); });
document.addEventListener("keyup", (e) => { if (e.key === "a") release(); });

// ---- rendering -----------------------------------------------------------------------

function renderHeard(userId) {
  const cell = document.querySelector(`[data-heard="${CSS.escape(userId)}"]`);
  const entry = meeting.heard[userId];
  if (cell && entry) {
    cell.textContent = entry.freq ? `hearing ${Math.round(entry.freq)} Hz` : "silent";
  }
}

function render() {
  const { users, ai } = meeting.state;
  $("mic").textContent = micOn ? "Mic on" : "Mic off";
  $("mic").setAttribute("aria-pressed", String(micOn));
  $("ai-toggle").textContent = ai.enabled ? "Disable AI" : ai.connectionPending ? "AI connecting…" : "Enable AI";
  $("ai-toggle").disabled = Boolean(ai.connectionPending);
  const holder = users.find((u) => u.id === ai.controllingUser);
  $("ai-talk").disabled = !ai.enabled || (ai.controllingUser && ai.controllingUser !== connectionId);
  $("ai-talk").textContent = ai.controllingUser === connectionId ? "Speaking to AI…" : "Hold to talk to AI";
  $("ai-state").textContent = ai.enabled
    ? (holder ? `AI listening to ${holder.name}` : "AI enabled")
    : ai.error ? `AI error: ${ai.error}` : "AI off";
  const list = $("users");
  list.replaceChildren();
  for (const user of users) {
    if (user.id !== "ai" && !user.joined) continue;
    const row = document.createElement("li");
    row.dataset.user = user.id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = user.id === connectionId ? `${user.name} (you)` : user.name;
    const micState = document.createElement("span");
    micState.className = "mic";
    micState.textContent = user.tracks && user.tracks.audioEnabled === false ? "muted" : "mic on";
    const heard = document.createElement("span");
    heard.className = "heard";
    heard.dataset.heard = user.id;
    row.append(name, micState, heard);
    list.append(row);
    renderHeard(user.id);
  }
}
render();
