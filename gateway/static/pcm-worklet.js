// Mono float32 at the AudioContext's rate -> 16-bit PCM at 24 kHz, posted in ~100 ms pieces.
class PcmWorklet extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 24000;
    this.position = 0;
    this.out = new Int16Array(2400);
    this.filled = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const samples = input[0];
    // Linear interpolation (the context usually already runs at 24 kHz, then ratio is 1).
    while (this.position < samples.length - 1 || (this.ratio === 1 && this.position < samples.length)) {
      const i = Math.floor(this.position);
      const frac = this.position - i;
      const next = i + 1 < samples.length ? samples[i + 1] : samples[i];
      const value = samples[i] * (1 - frac) + next * frac;
      this.out[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
      if (this.filled === this.out.length) {
        this.port.postMessage(this.out.buffer, [this.out.buffer]);
        this.out = new Int16Array(2400);
        this.filled = 0;
      }
      this.position += this.ratio;
    }
    this.position -= samples.length;
    return true;
  }
}
registerProcessor("pcm-worklet", PcmWorklet);
