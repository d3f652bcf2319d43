"""The bundled demo: a synthetic speech corpus and a tiny pretrained Moonshine.

Nothing here is needed to use the harness on real models; it exists so that every
command runs offline, on a fresh machine, with a real WER signal.
"""
