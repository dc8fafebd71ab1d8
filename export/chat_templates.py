"""Chat templates written into random checkpoints.

They render the same text as the templates of the published ``-hf``
checkpoints (see ``qwen3_asr_triton.prompt`` for the resulting prompts):

- recogniser: one system turn holding all system text (empty when there is
  none), one user turn with ``<|audio_start|><|audio_pad|><|audio_end|>`` per
  audio item, every assistant message rendered verbatim (the forced-language
  prefill is continued from it), then the generation prompt if asked;
- aligner: the audio placeholders followed by each text item and
  ``<timestamp><timestamp>``.
"""

AUDIO_PLACEHOLDER = "<|audio_start|><|audio_pad|><|audio_end|>"

ASR_CHAT_TEMPLATE = (
    "{%- set acc = namespace(system='', audio='') -%}"
    "{%- for message in messages -%}"
    "{%- set parts = [{'type': 'text', 'text': message.content}] if message.content is string"
    " else message.content -%}"
    "{%- for part in parts -%}"
    "{%- if message.role == 'system' and part.type == 'text' and part.text is defined -%}"
    "{%- set acc.system = acc.system ~ part.text -%}"
    "{%- elif part.type == 'audio' or 'audio' in part or 'audio_url' in part -%}"
    "{%- set acc.audio = acc.audio ~ '" + AUDIO_PLACEHOLDER + "' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{{- '<|im_start|>system\\n' ~ acc.system ~ '<|im_end|>\\n' -}}"
    "{{- '<|im_start|>user\\n' ~ acc.audio ~ '<|im_end|>\\n' -}}"
    "{%- for message in messages if message.role == 'assistant' -%}"
    "{%- set reply = namespace(text='') -%}"
    "{%- if message.content is string -%}{%- set reply.text = message.content -%}"
    "{%- else -%}{%- for part in message.content if part.type == 'text' and part.text is defined -%}"
    "{%- set reply.text = reply.text ~ part.text -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- reply.text ~ '<|im_end|>\\n' -}}{% endgeneration %}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

ALIGNER_CHAT_TEMPLATE = (
    "{%- set acc = namespace(audio='', words='') -%}"
    "{%- for message in messages if message.content is not string -%}"
    "{%- for part in message.content -%}"
    "{%- if part.type == 'audio' or 'audio' in part or 'audio_url' in part -%}"
    "{%- set acc.audio = acc.audio ~ '" + AUDIO_PLACEHOLDER + "' -%}"
    "{%- endif -%}"
    "{%- if part.type == 'text' and part.text is defined -%}"
    "{%- set acc.words = acc.words ~ part.text ~ '<timestamp><timestamp>' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{{- acc.audio ~ (acc.words if acc.words else '<timestamp><timestamp>') -}}"
)
