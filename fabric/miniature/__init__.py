"""The miniature: a small world of images with known factors, for measuring what FABRIC does.

Random-weight checkpoints prove that FABRIC computes what the paper computes, never that it moves
images toward what a user liked. Measuring that needs a model that has learned something and
images whose content can be read off without a human: here, one shape on a plain background,
where the prompt names the shape ("a circle") and leaves its colour, the background, its size and
its position to the model.

- shapes.py        the procedural images: their factors, how they are drawn, the prompt that names them
- reader.py        a hand-written reader of those factors from pixels, validated on held-out images
- text_encoder.py  SD1's CLIP text encoder in plain torch, its weights regenerated from seeds
- model.py         the miniature Stable Diffusion on ldm's classes, saving and loading its weights
- train.py         trains it from drawn images with fixed seeds (python -m fabric.miniature.train)
- generate.py      vanilla and FABRIC images on it, as the webui makes them
- demo.py          the same seeds without and with feedback, as a picture (python -m fabric.miniature.demo)
- export.py        the miniature as a webui checkpoint with its .yaml (python -m fabric.miniature.export)
"""
