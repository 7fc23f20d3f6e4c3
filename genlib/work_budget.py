"""What one page may ask of the server for one session, capped by work (FLOPs, frames, bytes), not by counts of
chains or steps: the caps, the cost functions that price a request, and the plans that fit a request under its cap
(with the sentence the page shows when a cap applies), and the leaky buckets that share the explorers' work over
time per browser and for the whole server (SharedMeters). Disk retention of per-epoch grids and the Monte Carlo cache
is here too, so every limit a classroom meets is in one file.

Costs count multiply-adds as two FLOPs. A block Gibbs step of an RBM is two matrix products of (B, n_v) x (n_v, n_h):
4 n_v n_h FLOPs per chain. A Langevin step is one forward and one backward pass of the energy, about three forwards
(the backward pass costs about twice the forward, Griewank & Walther, "Evaluating Derivatives", 2008, ch. 4).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence


@dataclass(frozen=True, kw_only=True)
class Caps:
    """Per request of one session (a cached result shared by every viewer costs the server once)."""

    # a chain explorer's setting (RBM Gibbs, EBM Langevin, RBM-as-EBM): 60 GFLOP is ~5-20 s of one core; the default
    # models at their largest settings stay below it (RBM 784x512: 16 chains x 1,000 steps = 26 GFLOP; EBM
    # (16, 32, 64, 64): 8 x 1,000 steps and their energies = 55 GFLOP)
    chain_flops: float = 6e10
    # and over time, per browser (all its tabs together, dashboard/work_meter.py; a tab alone where the browser sends
    # no cookie): new chain settings worth 300 GFLOP in a burst, refilled at that per 5 minutes (1 GFLOP/s, a tenth
    # to a third of a core); a setting the browser asked for before costs nothing again
    session_flops: float = 3e11
    session_window_s: float = 300.0
    # and for the whole server, every browser together: ten browsers' budgets, 3 TFLOP in a burst and per 5 minutes
    # (10 GFLOP/s, one to three cores), so many browsers at once or a student clearing cookies cannot take more. A
    # class of 30 at the default settings (RBM 784x512, 4 chains x 200 steps: 1.3 GFLOP a setting) asks ~400 GFLOP
    # per 5 minutes if each tries 10 new settings
    server_flops: float = 3e12
    server_window_s: float = 300.0
    # what the shared meters remember: browsers (least recently active forgotten first: a forgotten browser starts
    # again with a full budget, which the server's bucket still bounds) and the settings each paid for (as hashes,
    # oldest forgotten first): at most ~30 MB however many fresh cookies a client makes up
    meter_browsers: int = 2048
    meter_settings: int = 128
    # the Ising panel's Gibbs sampling per RBM snapshot (~2 s of one core, once for every viewer): L = 8 and 16 get
    # all 1,000 chains of the default 256 hidden units, L = 32 64, L = 64 15; below ising_min_chains the error bars
    # mean nothing, so a larger RBM shows no live values (scripts/ising_study.py samples it)
    ising_flops: float = 2e10
    ising_min_chains: int = 10
    # the epochs' animation: frames, and pixels over all its frames (60 frames of 480 x 480)
    gif_frames: int = 60
    gif_pixels: int = 60 * 480 * 480
    # weights sent to one browser session for in-page decoding (base64): a 784x1,400 RBM or a VAE of 1,400 hidden
    decoder_bytes: int = 6 * 2**20
    # disk: per-epoch sample grids kept per run (older ones thinned, spacing doubling) and the Monte Carlo cache
    epoch_grids: int = 100
    ising_cache_bytes: int = 2 * 2**30


CAPS = Caps()  # read when a plan is made (not bound as defaults), so a test can lower them


def human_flops(n: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} FLOP"


def human_bytes(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


# ---- cost functions ----

def gibbs_step_flops(n_visible: int, n_hidden: int) -> float:
    """One block Gibbs step of one chain: W v (n_h x n_v) then W^T h, 2 FLOPs per multiply-add."""
    return 4.0 * n_visible * n_hidden


def free_energy_flops(n_visible: int, n_hidden: int) -> float:
    """One evaluation of an RBM's free energy F(v) for one image: W v and b.v."""
    return 2.0 * n_visible * n_hidden + 2.0 * n_visible


def forward_flops(fn: Callable[[Any], Any], example: Any) -> float:
    """FLOPs of fn(example) without gradients (genlib.flops.count_flops: matrix products and convolutions by
    PyTorch's own formulas, counted in this thread only). `example` is one input (batch of 1): the cost of one
    image."""
    import torch

    from genlib.flops import count_flops

    with torch.no_grad():
        return count_flops(fn, example)[0]


def langevin_step_flops(forward: float) -> float:
    """One Langevin step of one chain from the energy's forward FLOPs: forward + backward ~ 3 forwards."""
    return 3.0 * forward


def decoder_payload_bytes(layers: Sequence[tuple[int, int]]) -> int:
    """Bytes of the in-browser decoder's weights as sent: float32 weight (n_in x n_out) and bias (n_out) per layer,
    each base64 encoded (4 characters per 3 bytes)."""
    return sum(4 * math.ceil(4 * n_in * n_out / 3) + 4 * math.ceil(4 * n_out / 3) for n_in, n_out in layers)


def gif_pixels(frames: int, height: int, width: int) -> int:
    return frames * height * width


# ---- plans: a request fitted under its cap ----

@dataclass(frozen=True, kw_only=True)
class ChainPlan:
    """How many chains of how many steps to run; `note` says what was cut ('' when nothing was)."""

    chains: int
    steps: int
    flops: float
    note: str = ""

    @property
    def capped(self) -> bool:
        return bool(self.note)


def aligned_steps(steps: int, max_frames: int) -> int:
    """`steps` rounded down to a multiple of the recording interval steps // max_frames, so a chain ends on a
    recorded frame (the explorers' step sliders move by that interval)."""
    every = max(1, steps // max_frames)
    return max(1, steps - steps % every)


def plan_chains(step_flops: float, chains: int, steps: int, *, cap: float | None = None,
                what: str = "chains", max_frames: int = 200) -> ChainPlan:
    """`chains` chains of `steps` steps at `step_flops` each per chain, or fewer chains (then fewer steps, ending
    on a recorded frame of `max_frames`) so the work stays within `cap`. Chains go first: one chain of the chosen
    length still shows the dynamics. `cap`: CAPS.chain_flops unless given."""
    cap = CAPS.chain_flops if cap is None else cap
    want = step_flops * chains * steps
    if want <= cap:
        return ChainPlan(chains=chains, steps=steps, flops=want)
    n = int(cap // (step_flops * steps))
    if n >= 1:
        c, s = n, steps
    else:
        c, s = 1, aligned_steps(max(1, int(cap // step_flops)), max_frames)
    note = (f"Capped: {chains} {what} x {steps:,} steps of this model would be {human_flops(want)} of server work, "
            f"more than one setting may use ({human_flops(cap)}); showing {c} x {s:,} steps.")
    return ChainPlan(chains=c, steps=s, flops=step_flops * c * s, note=note)


def plan_ising(n_visible: int, n_hidden: int, chains: int, steps: int, *, cap: float | None = None,
               min_chains: int | None = None) -> ChainPlan:
    """The Ising panel's live sampling: up to `chains` chains of `steps` Gibbs steps within `cap`; chains = 0
    (with the note) when even `min_chains` chains do not fit. Unset: CAPS.ising_flops, CAPS.ising_min_chains."""
    cap = CAPS.ising_flops if cap is None else cap
    min_chains = CAPS.ising_min_chains if min_chains is None else min_chains
    per_chain = gibbs_step_flops(n_visible, n_hidden) * steps
    n = int(min(chains, cap // per_chain))
    if n >= min(chains, min_chains):
        note = "" if n == chains else (f"Capped at {n:,} chains (the page's {human_flops(cap)} of sampling per "
                                       "snapshot).")
        return ChainPlan(chains=n, steps=steps, flops=per_chain * n, note=note)
    return ChainPlan(chains=0, steps=steps, flops=0.0,
                     note=f"This RBM ({n_visible:,} x {n_hidden:,}) is too large to sample on the page: {min_chains} "
                          f"chains of {steps} steps would be {human_flops(per_chain * min_chains)}, over the page's "
                          f"{human_flops(cap)} per snapshot. scripts/ising_study.py samples it offline.")


def gif_frames(n: int, height: int, width: int, *, max_frames: int | None = None,
               max_pixels: int | None = None) -> tuple[list[int], str]:
    """Indices of the `n` frames (each height x width once upscaled) an animation shows: evenly spaced, the first and
    the last always, at most max_frames and max_pixels in all (CAPS' unless given); and the note when frames were
    left out."""
    max_frames = CAPS.gif_frames if max_frames is None else max_frames
    max_pixels = CAPS.gif_pixels if max_pixels is None else max_pixels
    if n <= 0:
        return [], ""
    fit = max(2, min(max_frames, max_pixels // max(1, height * width)))
    if n <= fit:
        return list(range(n)), ""
    idx = sorted({round(i * (n - 1) / (fit - 1)) for i in range(fit)})
    return idx, (f"Showing {len(idx)} of the {n} frames, evenly spaced with the first and the last: an animation "
                 f"holds at most {fit} frames of this size on the server.")


def animated_epochs(epochs: Sequence[int], *, live: bool, every: float = 0.1) -> list[int]:
    """The epochs a run's animation is built from. A live run lands an epoch every few seconds: its animation is
    rebuilt when the saved epochs grew by `every` (10%), not at each one, so it stays within the newest 10% while a
    run trains (all of them once it stopped). Each rebuild is bounded by gif_frames."""
    epochs = sorted(epochs)
    if not live or len(epochs) <= 10:
        return epochs
    step = max(1, int(len(epochs) * every))
    return epochs[: len(epochs) - len(epochs) % step]


def decoder_fits(layers: Sequence[tuple[int, int]], *, cap: int | None = None) -> tuple[bool, str]:
    """Whether a decoder's weights may be sent to a browser session (cap: CAPS.decoder_bytes unless given); the
    page's note when they may not."""
    cap = CAPS.decoder_bytes if cap is None else cap
    size = decoder_payload_bytes(layers)
    if size <= cap:
        return True, ""
    return False, (f"This model's weights ({human_bytes(size)}) are more than a browser session is sent for "
                   f"in-page decoding ({human_bytes(cap)}).")


@dataclass
class WorkMeter:
    """The work one browser (or the whole server) asked for lately, a leaky bucket: it holds at most `budget` FLOPs
    and drains at budget / window_s per second, so it takes `budget` at once and `budget` per window over time."""

    budget: float
    window_s: float
    level: float = 0.0
    at: float = 0.0

    def level_at(self, now: float) -> float:
        """The FLOPs it holds at `now`, drained since the last charge."""
        return max(0.0, self.level - self.budget * (now - self.at) / self.window_s)

    def wait(self, flops: float, now: float) -> float:
        """Seconds from `now` until `flops` fit (0: they fit now); changes nothing. An empty meter takes any one
        request (each is capped by plan_chains already)."""
        level = self.level_at(now)
        if level + flops <= self.budget or level == 0.0:
            return 0.0
        return (level + flops - self.budget) * self.window_s / self.budget

    def charge(self, flops: float, now: float) -> float:
        """Charge `flops` at time `now` (seconds) and return 0, or return the seconds until they fit (nothing
        charged)."""
        wait = self.wait(flops, now)
        self.level = self.level_at(now) + (0.0 if wait else flops)
        self.at = now
        return wait


@dataclass(frozen=True)
class Refusal:
    """Why a request waits: whose bucket is full ("browser", or "server" for every browser together), the seconds
    until it fits, and what that bucket holds now (FLOPs)."""

    scope: str
    wait_s: float
    level: float


class SharedMeters:
    """Every browser's WorkMeter (keyed by the caller: a browser, or a tab that sent no cookie) and the server's,
    behind one lock (each session's script runs in its own thread): a request is charged to both or to neither, and
    a setting a browser paid for is free for it again. Bounded by caps.meter_browsers browsers (the least recently
    active forgotten) of caps.meter_settings remembered settings each."""

    def __init__(self, caps: Caps) -> None:
        self._caps = caps
        self._lock = threading.Lock()
        self._browsers: OrderedDict[Hashable, tuple[WorkMeter, OrderedDict[int, None]]] = OrderedDict()
        self.server = WorkMeter(budget=caps.server_flops, window_s=caps.server_window_s)

    def __len__(self) -> int:
        return len(self._browsers)

    def charge(self, key: Hashable, setting: Hashable, flops: float, now: float) -> Refusal | None:
        """Charge `flops` for `setting` to browser `key` and to the server at `now`: None when it may run (free when
        the browser asked for it before), else the Refusal of the first bucket that is full, the browser's first."""
        caps, mark = self._caps, hash(setting)
        with self._lock:
            entry = self._browsers.get(key)
            if entry is None:
                entry = self._browsers[key] = (WorkMeter(budget=caps.session_flops, window_s=caps.session_window_s),
                                               OrderedDict())
            self._browsers.move_to_end(key)  # the most recently active last
            while len(self._browsers) > caps.meter_browsers:
                self._browsers.popitem(last=False)
            meter, seen = entry
            if mark in seen:
                return None
            for scope, m in (("browser", meter), ("server", self.server)):
                wait = m.wait(flops, now)
                if wait:
                    return Refusal(scope=scope, wait_s=wait, level=m.level_at(now))
            meter.charge(flops, now)
            self.server.charge(flops, now)
            seen[mark] = None
            while len(seen) > caps.meter_settings:
                seen.popitem(last=False)
            return None


# ---- disk retention ----

def thin_epochs(epochs: Sequence[int], keep: int | None = None) -> list[int]:
    """Which epochs to delete so that at most `keep` remain: the multiples of the smallest power-of-two spacing that
    fits, plus the first and the newest. Stable as epochs arrive: a kept epoch is dropped only when the spacing
    doubles, so the saved grids stay evenly spread over the whole run. `keep`: CAPS.epoch_grids unless given."""
    epochs = sorted(set(epochs))
    keep = max(3, CAPS.epoch_grids if keep is None else keep)
    if len(epochs) <= keep:
        return []
    first, last = epochs[0], epochs[-1]
    stride = 1
    while True:
        kept = {e for e in epochs if e % stride == 0} | {first, last}
        if len(kept) <= keep:
            return [e for e in epochs if e not in kept]
        stride *= 2


def cache_to_evict(files: Sequence[tuple[str, int, float]], cap: int, *, protect: Sequence[str] = ()) -> list[str]:
    """Least recently used cache files to delete so the total stays within `cap` bytes. files: (path, bytes,
    last used); `protect`: paths never deleted (the file just written, which a job is about to read)."""
    total = sum(size for _, size, _ in files)
    out = []
    for path, size, _ in sorted(files, key=lambda f: f[2]):
        if total <= cap:
            break
        if path in protect:
            continue
        out.append(path)
        total -= size
    return out
