"""Speaker diarization ("who spoke when"): pure maths and ONNX Runtime sessions, no Triton imports.

The ``diarizer`` Triton model and the entry model's speaker labels are thin glue over this package.
"""
