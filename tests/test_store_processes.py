"""Two processes sharing one store folder, as two webuis with the same Settings → FABRIC folder do.

Each process adds images (its own, plus one picture both add), saves presets of them, deletes
some of its presets and prunes, all at once with the other. Nothing either process saved may go
missing and nothing may be damaged: every preset a process saved and did not delete is there with
all its images, every file is whole, and no temporary file is left. A prune may delete the other
process's image between that process's add and its save_preset (an unused image is what prune
deletes); the save then fails with "no image with id" and the process adds it again.
"""
import multiprocessing
import os

from fabric.errors import FabricNotFoundError
from fabric.feedback.images import image_id
from fabric.feedback.store import FeedbackStore

from payload_support import picture

ROUNDS = 120


def _worker(root: str, who: int, rounds: int, results) -> None:
    store = FeedbackStore(root)
    kept, raced = {}, 0
    shared = picture(999, size=(6, 5))
    for n in range(rounds):
        name = f"p{who}-{n}"
        for _ in range(20):
            ids = [store.add(picture(1000 * who + n, size=(6, 5))), store.add(shared)]
            try:
                store.save_preset(name, [{"id": i, "weight": 1.0} for i in ids], [{"id": ids[1], "weight": 0.5}])
                kept[name] = ids
                break
            except FabricNotFoundError:
                raced += 1  # the other process pruned it between our add and our save: add again
        if n % 3 == 2:
            old = f"p{who}-{n - 2}"
            store.delete_preset(old)
            kept.pop(old)
        if n % 4 == 3:
            store.prune()
    results.put((who, kept, raced))


def test_two_processes_sharing_a_store_lose_nothing_and_corrupt_nothing(tmp_path):
    root = tmp_path / "shared-store"
    root.mkdir()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_worker, args=(str(root), who, ROUNDS, results)) for who in (1, 2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    store = FeedbackStore(root)
    raced = 0
    for who, kept, worker_raced in outcomes:
        raced += worker_raced
        assert len(kept) > ROUNDS // 3
        for name, ids in kept.items():
            preset = store.load_preset(name)
            assert [e["id"] for e in preset["liked"]] == ids
            for ident in ids:
                assert store.has(ident), f"{name}: image {ident} is gone"
    for folder in (store.images_dir, store.presets_dir):
        assert not [n for n in os.listdir(folder) if n.startswith(".tmp-")], "a temporary file was left"
    for entry in store.list():  # every image whole, under the id of its pixels
        assert image_id(store.get(entry["id"])) == entry["id"]
    presets = store.list_presets()
    assert {p["name"] for p in presets} == {name for _, kept, _ in outcomes for name in kept}
    print(f"store shared by 2 processes: {2 * ROUNDS} presets saved, {len(presets)} kept, "
          f"{raced} saves raced by the other's prune and retried, 0 lost")
