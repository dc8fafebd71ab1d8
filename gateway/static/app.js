// Microphone -> AudioWorklet (24 kHz PCM16) -> base64 -> input_audio_buffer.append on /v1/realtime;
// Realtime transcription events -> captions. And a file upload to /v1/audio/transcriptions.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;
let audio = null;
const items = new Map();

function status(text) { $("status").textContent = text; }

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

function line(itemId) {
  let entry = items.get(itemId);
  if (!entry) {
    const p = document.createElement("p");
    p.dataset.item = itemId;
    const time = document.createElement("span");
    time.className = "time";
    const text = document.createElement("span");
    text.className = "partial";
    p.append(time, text);
    $("captions").append(p);
    entry = { p, time, text, partial: "" };
    items.set(itemId, entry);
  }
  return entry;
}

function onEvent(event) {
  switch (event.type) {
    case "session.created":
    case "session.updated":
      status(`listening (${event.session.audio.input.format.rate} Hz)`);
      break;
    case "input_audio_buffer.speech_started":
      line(event.item_id).time.textContent = clock(event.audio_start_ms / 1000);
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const entry = line(event.item_id);
      entry.partial += event.delta;
      entry.text.textContent = entry.partial;
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const entry = line(event.item_id);
      entry.p.className = "final";
      if (event.start !== undefined) entry.time.textContent = `${clock(event.start)}–${clock(event.end)}`;
      entry.text.className = "final-text";
      entry.text.textContent = "";
      if (event.words && event.words.length) {
        event.words.forEach((w, i) => {
          const span = document.createElement("span");
          span.className = "word";
          span.textContent = w.word;
          span.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
          entry.text.append(span, i + 1 < event.words.length ? " " : "");
        });
        entry.text.title = event.transcript;
      } else {
        entry.text.textContent = event.transcript || "…";
      }
      break;
    }
    case "conversation.item.input_audio_transcription.failed":
      line(event.item_id).text.textContent = `(failed: ${event.error.message})`;
      break;
    case "error":
      status(`error: ${event.error.message}`);
      break;
  }
}

async function start() {
  const key = $("key").value.trim();
  const language = $("language").value.trim();
  $("start").disabled = true;
  status("connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const protocols = ["realtime"];
  if (key) protocols.push(`openai-insecure-api-key.${key}`);
  socket = new WebSocket(`${scheme}://${location.host}/v1/realtime?intent=transcription`, protocols);
  socket.onmessage = (m) => onEvent(JSON.parse(m.data));
  socket.onclose = (e) => { status(`closed (${e.code}${e.reason ? ": " + e.reason : ""})`); stop(); };
  socket.onerror = () => status("connection failed (wrong key?)");
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("close", reject, { once: true });
  });
  socket.send(JSON.stringify({
    type: "session.update",
    session: {
      type: "transcription",
      audio: { input: {
        format: { type: "audio/pcm", rate: 24000 },
        transcription: { model: "qwen3-asr", language: language || null },
        turn_detection: { type: "server_vad", silence_duration_ms: 500, prefix_padding_ms: 300 },
      } },
      include: ["item.input_audio_transcription.words"],
    },
  }));
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext({ sampleRate: 24000 });
  const source = context.createMediaStreamSource(stream);
  const send = (buffer) => {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(buffer) }));
    }
  };
  let node;
  if (context.audioWorklet) {
    await context.audioWorklet.addModule("/static/pcm-worklet.js");
    node = new AudioWorkletNode(context, "pcm-worklet");
    node.port.onmessage = (m) => send(m.data);
  } else {
    // Without AudioWorklet (plain http from another host): the deprecated ScriptProcessor.
    node = context.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (e) => {
      const f = e.inputBuffer.getChannelData(0);
      const pcm = new Int16Array(f.length);
      for (let i = 0; i < f.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
      send(pcm.buffer);
    };
  }
  source.connect(node);
  node.connect(context.destination);
  audio = { stream, context };
  $("stop").disabled = false;
}

function stop() {
  if (audio) {
    audio.stream.getTracks().forEach((t) => t.stop());
    audio.context.close();
    audio = null;
  }
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    setTimeout(() => socket && socket.close(1000), 3000);
  }
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("start").addEventListener("click", () => start().catch((e) => { status(`error: ${e}`); $("start").disabled = false; }));
$("stop").addEventListener("click", stop);

$("upload").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("upload-result");
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("model", "qwen3-asr");
  form.append("file", file);
  form.append("response_format", "verbose_json");
  if ($("language").value.trim()) form.append("language", $("language").value.trim());
  if ($("upload-words").checked) form.append("timestamp_granularities[]", "word");
  form.append("timestamp_granularities[]", "segment");
  out.textContent = "transcribing…";
  const response = await fetch("/v1/audio/transcriptions", {
    method: "POST", body: form, headers: { Authorization: `Bearer ${$("key").value.trim()}` },
  });
  const body = await response.json();
  if (!response.ok) { out.textContent = `error ${response.status}: ${body.error ? body.error.message : ""}`; return; }
  const lines = [`${body.text}`, "", `language: ${body.language}, duration: ${body.duration} s`];
  for (const s of body.segments || []) lines.push(`[${clock(s.start)}–${clock(s.end)}] ${s.text}`);
  if (body.words) lines.push("", body.words.map((w) => `${w.word}@${w.start.toFixed(2)}`).join(" "));
  out.textContent = lines.join("\n");
});
