"""FABRIC's effect measured as the paper measures it, on the trained miniature (python -m fabric.quality).

- measures.py     shares with Wilson intervals, Fisher's exact test, colour similarity, diversity, burnout
- single_shot.py  one set of liked and disliked images against vanilla on the same seeds, knob by knob
- rounds.py       the paper's section 5.2: simulated users giving feedback toward a hidden target
- webui_generator.py  the same jobs through a running webui's HTTP API (--webui URL)
"""
