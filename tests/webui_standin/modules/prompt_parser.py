"""modules/prompt_parser.py (v1.10.1), without prompt editing ([from:to:when]) and attention syntax.

Facts encoded (webui-host-api.md §3.2 "Building the batch", §5 "Text conditioning",
"What the samplers receive"):
- `SdConditioning(prompts, is_negative_prompt=False, width=None, height=None, copy_from=None)`: a
  list of prompts that carries the size (SDXL's size conditioning reads it) and the negative flag.
- AND: each prompt is split on `\\bAND\\b`; every sub-prompt may end in `:weight`; identical
  sub-prompt texts are encoded once (`get_multicond_prompt_list`).
- `p.c` is a `MulticondLearnedConditioning(shape, batch)` whose `batch[i]` lists
  `ComposableScheduledPromptConditioning(schedules, weight)`; `p.uc` is a list (one per image) of
  lists of `ScheduledPromptConditioning(end_at_step, cond)`. Here every prompt has one schedule.
- `reconstruct_multicond_batch(c, step)` returns `conds_list` (per image, `(row, weight)` per AND
  sub-prompt, rows numbered in image order) and the stacked cond rows; prompts of different token
  lengths are padded by repeating their last token vector (`stack_conds`); SDXL conds are
  `DictWithShape` dicts (`crossattn`, `vector`) whose `.shape` is the crossattn shape.
- `reconstruct_cond_batch(uc, step)` stacks one uncond row per image.
"""
from __future__ import annotations

import re
from collections import namedtuple

import torch


class SdConditioning(list):
    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


def get_learned_conditioning(model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False):
    """One schedule per prompt (no prompt editing): [[ScheduledPromptConditioning(steps, cond)], ...]."""
    res = []
    cache = {}
    texts = SdConditioning(list(prompts), copy_from=prompts)
    conds = model.get_learned_conditioning(texts)
    for i, prompt in enumerate(prompts):
        if prompt in cache:
            res.append(cache[prompt])
            continue
        cond = {k: v[i] for k, v in conds.items()} if isinstance(conds, dict) else conds[i]
        schedule = [ScheduledPromptConditioning(steps, cond)]
        cache[prompt] = schedule
        res.append(schedule)
    return res


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts: SdConditioning | list[str]):
    res_indexes = []
    prompt_indexes = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()
    for prompt in prompts:
        subprompts = re_AND.split(prompt)
        indexes = []
        for subprompt in subprompts:
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, 1.0)
            weight = float(weight) if weight is not None else 1.0
            index = prompt_indexes.get(text, None)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape: tuple = shape
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False) -> MulticondLearnedConditioning:
    res_indexes, prompt_flat_list, prompt_indexes = get_multicond_prompt_list(prompts)
    learned_conditioning = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    res = []
    for indexes in res_indexes:
        res.append([ComposableScheduledPromptConditioning(learned_conditioning[i], weight) for i, weight in indexes])
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=res)


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    param = c[0][0].cond
    is_dict = isinstance(param, dict)
    if is_dict:
        dict_cond = param
        res = {k: torch.zeros((len(c),) + v.shape, device=v.device, dtype=v.dtype) for k, v in dict_cond.items()}
        res = DictWithShape(res, (len(c),) + dict_cond["crossattn"].shape)
    else:
        res = torch.zeros((len(c),) + param.shape, device=param.device, dtype=param.dtype)
    for i, cond_schedule in enumerate(c):
        target_index = 0
        for current, entry in enumerate(cond_schedule):
            if current_step <= entry.end_at_step:
                target_index = current
                break
        if is_dict:
            for k, v in cond_schedule[target_index].cond.items():
                res[k][i] = v
        else:
            res[i] = cond_schedule[target_index].cond
    return res


def stack_conds(tensors):
    token_count = max([x.shape[0] for x in tensors])
    for i in range(len(tensors)):
        if tensors[i].shape[0] != token_count:
            last_vector = tensors[i][-1:]
            last_vector_repeated = last_vector.repeat([token_count - tensors[i].shape[0], 1])
            tensors[i] = torch.vstack([tensors[i], last_vector_repeated])
    return torch.stack(tensors)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    param = c.batch[0][0].schedules[0].cond
    tensors = []
    conds_list = []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for composable_prompt in composable_prompts:
            target_index = 0
            for current, entry in enumerate(composable_prompt.schedules):
                if current_step <= entry.end_at_step:
                    target_index = current
                    break
            conds_for_batch.append((len(tensors), composable_prompt.weight))
            tensors.append(composable_prompt.schedules[target_index].cond)
        conds_list.append(conds_for_batch)
    if isinstance(tensors[0], dict):
        keys = list(tensors[0].keys())
        stacked = {k: stack_conds([x[k] for x in tensors]) for k in keys}
        stacked = DictWithShape(stacked, stacked["crossattn"].shape)
    else:
        stacked = stack_conds(tensors).to(device=param.device, dtype=param.dtype)
    return conds_list, stacked
