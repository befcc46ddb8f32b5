"""SGAN / PSGAN adversarial training from one or more exemplar images.

As in the papers: random crops of the exemplar(s) against generated textures, a fully
convolutional discriminator that scores every spatial position (stride-2 convolutions,
LeakyReLU 0.2, BatchNorm in the middle layers), both nets trained with Adam (lr 2e-4,
beta1 0.5). The generator sees noise from the project's own NoiseField (a random seed
and origin per sample) and is run exactly as tiled inference runs it: noise window plus
halo, every map cropped to the interior (`forward_interior`), so a trained model tiles
exactly. Checkpoints are written periodically (weights + model card as usual, plus the
discriminator and optimiser state as safetensors + JSON, never pickle) and a killed run
resumes from the last one.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyvips
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from texprod.engine import Generator, GeneratorConfig, make_config, receptive_field
from texprod.engine.noise import ConstantField, NoiseField, global_latent
from texprod.engine.render import Renderer, forward_interior, render_canvas, resolve_device
from texprod.errors import ConfigError, TexprodError
from texprod.files import atomic_output, atomic_write_bytes, directory_problem, sha256_file
from texprod.models import load_checkpoint, save_generator
from texprod.models.card import CARD_FILE, publish_order, read_card
from texprod.models.references import resolve_model
from texprod.storage import cache_root, head, is_s3, upload_file
from texprod.training.quality import MIN_SIZE, load_exemplar, random_crops, texture_stats

log = logging.getLogger(__name__)

STATE_FILE = "training_state.safetensors"
STATE_JSON = "training.json"
CALIBRATION_BATCHES = 16  # noise batches that measure the averaged model's BN statistics
SIZES = {  # generator widths per named size (5 layers, kernel 5)
    "small": (256, 128, 64, 32),
    "standard": (512, 256, 128, 64),
}
CROPS = {"small": 128, "standard": 160}  # training crop per named size
D_SIZES = {"small": (32, 64, 128, 256), "standard": (64, 128, 256, 512)}  # discriminator


DEFAULT_LR = 2e-4  # Adam's rate in the papers


@dataclass
class TrainConfig:
    arch: str = "sgan"
    filters: tuple[int, ...] = SIZES["small"]
    d_filters: tuple[int, ...] = D_SIZES["small"]
    crop_px: int = 128
    batch: int = 8
    iters: int = 2000
    lr: float | None = None  # None: DEFAULT_LR for a new run, the saved rate on --resume
    beta1: float = 0.5
    seed: int = 0
    checkpoint_every: int = 250
    samples_every: int = 250
    name: str = ""
    nz_local: int | None = None
    nz_global: int | None = None
    nz_periodic: int | None = None
    upsample: str = "tconv"
    # one-sided label smoothing (Salimans et al. 2016): real crops are scored against 0.9,
    # so the discriminator cannot become certain and starve the generator of gradient
    # (without it a CPU run collapsed to a flat grid after 3500 good iterations)
    real_label: float = 0.9
    # the model saved is an exponential moving average of the generator's weights (decay
    # per iteration; 0 = the raw weights): GAN weights oscillate from one iteration to the
    # next, their average is a steadier and better texture (Yazici et al. 2019)
    ema: float = 0.999
    # warm start: a trained checkpoint whose generator weights seed this one's (same
    # widths and local channels; new global / periodic input channels start at zero)
    init: str | None = None
    # and a training run directory whose discriminator seeds this one's: a fresh, random
    # discriminator's first gradients wiped a warm-started generator's texture within 1250
    # iterations, a trained one keeps it while the new global channels learn
    init_discriminator: str | None = None
    # PSGAN: gradient steps that refine each exemplar's named latent after training
    latent_steps: int = 60

    def __post_init__(self) -> None:
        # named as the `texprod train` options that set them
        for option, value, least in (("--iters", self.iters, 1), ("--batch", self.batch, 1),
                                     ("--samples-every", self.samples_every, 1),
                                     ("--checkpoint-every", self.checkpoint_every, 1),
                                     ("--latent-steps", self.latent_steps, 0)):
            if value < least:
                raise ConfigError(f"{option}: got {value}, must be at least {least}")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ConfigError(f"--lr: got {self.lr}, must be between 0 and 1 (the papers' "
                              f"{DEFAULT_LR})")

    @classmethod
    def from_cli(cls, size: str = "small", filters: tuple[int, ...] | None = None,
                 **options) -> TrainConfig:
        """--size small | standard | crop px (small generator); --filters overrides widths."""
        preset = size if size in CROPS else "small"
        try:
            crop = CROPS[size] if size in CROPS else int(size)
        except ValueError:
            raise ConfigError(f"--size: got {size!r}, must be small, standard or a crop size "
                              "in pixels") from None
        return cls(filters=tuple(filters or SIZES[preset]), d_filters=D_SIZES[preset],
                   crop_px=crop, **options)

    def generator_config(self) -> GeneratorConfig:
        return make_config(arch=self.arch, upsample=self.upsample, filters=self.filters,
                           nz_local=self.nz_local, nz_global=self.nz_global,
                           nz_periodic=self.nz_periodic)


class Discriminator(nn.Module):
    """Fully convolutional: (B, 3, H, W) -> logits (B, 1, H / 32, W / 32), one per position."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512), kernel: int = 5):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(widths):
            layers.append(nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2,
                                    bias=i == 0))
            if i > 0:  # no BatchNorm on the input layer (DCGAN)
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, kernel, stride=2, padding=kernel // 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init_weights(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=gen)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=gen)
            nn.init.zeros_(m.bias)


def load_exemplars(paths: list[str | Path], crop_px: int) -> list[np.ndarray]:
    """Exemplars as (H, W, 3) uint8 sRGB; too small for the crop size is an error."""
    images = []
    for path in paths:
        image = load_exemplar(path)
        h, w = image.shape[:2]
        if min(h, w) < crop_px:
            raise TexprodError(f"exemplar {path}: {w} x {h} px is smaller than the training "
                               f"crop of {crop_px} px; use a larger image or a smaller "
                               "--size")
        images.append(image)
    return images


@dataclass
class TrainingState:
    iteration: int = 0
    seconds: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)  # running averages
    history: list[dict] = field(default_factory=list)  # one entry per checkpoint


class Trainer:
    def __init__(self, exemplars: list[str | Path], out: str | Path, config: TrainConfig,
                 device: str = "auto", resume: bool = False):
        self._lr_given = config.lr is not None  # else a resume keeps the saved rate
        self.config = config = replace(config, lr=DEFAULT_LR if config.lr is None else config.lr)
        self.out = Path(out)
        if problem := directory_problem(self.out):
            raise ConfigError(f"--out: got '{self.out}', but {problem}")
        self.device = resolve_device(device, "--device")
        self.exemplar_paths = [Path(p) for p in exemplars]
        self.exemplars = load_exemplars(self.exemplar_paths, config.crop_px)
        self.rng = np.random.default_rng(config.seed)
        self.init_digest: str | None = None  # the model digest of --init, when given
        torch_gen = torch.Generator().manual_seed(config.seed)
        if resume and (self.out / STATE_FILE).exists():
            # the checkpoint holds the averaged model; the raw weights come with the state
            saved = load_checkpoint(self.out)
            self.G = saved.generator
            self.init_digest = saved.card["provenance"].get("training", {}).get("init_digest")
        else:
            if self.out.exists() and any(self.out.iterdir()) and not resume:
                raise TexprodError(f"--out {self.out}: exists and is not empty; pass --resume "
                                   "to continue its training or choose another directory")
            self.G = Generator(config.generator_config())
            _init_weights(self.G, torch_gen)
            if config.init:

                try:
                    source = load_checkpoint(resolve_model(config.init))
                except TexprodError as e:
                    raise ConfigError(f"--init {config.init}: {e}") from None
                warm_start(self.G, source.generator)
                self.init_digest = source.digest
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False).eval()  # what is saved
        self._model_at = -1  # the iteration G_ema's BatchNorm statistics were measured at
        self.D = Discriminator(tuple(config.d_filters))
        _init_weights(self.D, torch_gen)
        self.init_d_digest: str | None = None  # sha256 of --init-discriminator's state file
        if config.init_discriminator and not (resume and (self.out / STATE_FILE).exists()):
            self.init_d_digest = warm_start_discriminator(self.D, config.init_discriminator)
        self.G.to(self.device).train()
        self.G_ema.to(self.device)
        self.D.to(self.device).train()
        self.rf = receptive_field(self.G.blocks)
        cell = self.rf.cell_px
        if config.crop_px % cell:
            raise ConfigError(f"--size: got {config.crop_px} px crops, must be a multiple of "
                              f"the generator's cell size {cell} px")
        self.cells = config.crop_px // cell
        betas = (config.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas)
        self.state = TrainingState()
        if resume and (self.out / STATE_FILE).exists():
            self._load_state()
        self.bce = nn.BCEWithLogitsLoss()

    # -------------------------------------------------------------------------- batches

    def real_batch(self) -> torch.Tensor:
        """Random crops of the exemplars: (B, 3, crop, crop) in [-1, 1]."""
        c = self.config.crop_px
        crops = []
        for _ in range(self.config.batch):
            image = self.exemplars[int(self.rng.integers(len(self.exemplars)))]
            y = int(self.rng.integers(image.shape[0] - c + 1))
            x = int(self.rng.integers(image.shape[1] - c + 1))
            crops.append(image[y: y + c, x: x + c])
        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()  # (B, 3, c, c)
        return (batch / 127.5 - 1.0).to(self.device)

    def noise_batch(self, generator: Generator | None = None,
                    rng: np.random.Generator | None = None) -> torch.Tensor:
        """Z with halo from the project's noise field, a random seed and origin per sample."""
        generator, rng = generator or self.G, rng or self.rng
        n = self.cells + 2 * self.rf.halo
        windows = []
        for _ in range(self.config.batch):
            seed = int(rng.integers(2**63))
            y, x = (int(v) for v in rng.integers(-(10**6), 10**6, size=2))
            field = NoiseField(generator.config, seed, waves=generator.waves)
            windows.append(field.windows([(y, x)], n, n, self.device))
        return torch.cat(windows)  # (B, nz, n, n)

    def generate(self, z: torch.Tensor, generator: Generator | None = None) -> torch.Tensor:
        blocks = (generator or self.G).blocks
        return forward_interior(blocks, self.rf, z, (self.cells, self.cells))

    # ----------------------------------------------------------------------------- step

    def step(self) -> dict[str, float]:
        real = self.real_batch()
        fake = self.generate(self.noise_batch())
        # discriminator: real -> 1, fake -> 0 at every position
        self.opt_d.zero_grad(set_to_none=True)
        d_real = self.D(real)
        d_fake = self.D(fake.detach())
        loss_d = self.bce(d_real, torch.full_like(d_real, self.config.real_label)) + \
            self.bce(d_fake, torch.zeros_like(d_fake))
        loss_d.backward()
        self.opt_d.step()
        # generator: make the discriminator say 1 (non-saturating loss)
        self.opt_g.zero_grad(set_to_none=True)
        d_fake = self.D(fake)
        loss_g = self.bce(d_fake, torch.ones_like(d_fake))
        loss_g.backward()
        self.opt_g.step()
        with torch.no_grad():  # the average follows the raw weights
            for avg, raw in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                avg.lerp_(raw, 1.0 - self.config.ema)
        losses = {"d": loss_d.item(), "g": loss_g.item()}
        if not all(np.isfinite(v) for v in losses.values()):
            raise TexprodError(f"training diverged at iteration {self.state.iteration + 1}: "
                               f"losses {losses}")
        return losses

    def run(self, progress: Callable[[int, dict[str, float], float], None] | None = None
            ) -> Path:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        base_seconds = self.state.seconds
        while self.state.iteration < cfg.iters:
            losses = self.step()
            self.state.iteration += 1
            for k, v in losses.items():
                self.state.losses[k] = 0.98 * self.state.losses.get(k, v) + 0.02 * v
            self.state.seconds = base_seconds + time.perf_counter() - started
            if progress:
                progress(self.state.iteration, self.state.losses, self.state.seconds)
            i = self.state.iteration
            if i % cfg.samples_every == 0 or i == cfg.iters:
                self.write_samples()
                self.write_snapshot()
            if i % cfg.checkpoint_every == 0 or i == cfg.iters:
                self.save()
        return self.out

    # ---------------------------------------------------------------------- checkpoints

    def model(self) -> Generator:
        """The averaged generator, in eval mode, with BatchNorm statistics measured on its
        own activations (the raw generator's do not fit averaged weights). A fixed noise
        stream per iteration keeps the training's random stream untouched."""
        if self._model_at == self.state.iteration:  # samples, snapshot, save: one calibration
            return self.G_ema
        self._model_at = self.state.iteration
        bns = [m for m in self.G_ema.modules() if isinstance(m, nn.BatchNorm2d)]
        if self.config.ema == 0:  # the raw generator itself
            self.G_ema.load_state_dict(self.G.state_dict())
            return self.G_ema.eval()
        rng = np.random.default_rng([self.config.seed, self.state.iteration])
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calibration batches
        self.G_ema.train()
        with torch.no_grad():
            for _ in range(CALIBRATION_BATCHES):
                self.generate(self.noise_batch(self.G_ema, rng), self.G_ema)
        for bn in bns:
            bn.momentum = 0.1
        return self.G_ema.eval()

    def provenance(self) -> dict:
        return {
            "exemplars": [{"name": p.name, "sha256": sha256_file(p)}
                          for p in self.exemplar_paths],
            "training": {
                **asdict(self.config),
                "iterations": self.state.iteration,
                "seconds": round(self.state.seconds, 1),
                "seconds_per_iteration": round(self.state.seconds
                                               / max(1, self.state.iteration), 4),
                "device": str(self.device) if self.device.type == "cpu"
                else torch.cuda.get_device_name(self.device),
                "losses": {k: round(v, 4) for k, v in self.state.losses.items()},
                **({"init_digest": self.init_digest} if self.init_digest else {}),
                **({"init_discriminator_digest": self.init_d_digest}
                   if self.init_d_digest else {}),
            },
        }

    def save(self, latents: dict[str, torch.Tensor] | None = None) -> None:
        """Model checkpoint (the averaged generator, loadable by load_generator) plus the
        resumable training state (raw generator, discriminator, optimisers, RNG)."""
        cfg = self.config
        name = cfg.name or self.out.name
        description = (f"{cfg.arch} trained on {', '.join(p.name for p in self.exemplar_paths)}"
                       f" for {self.state.iteration} iterations")
        save_generator(self.model(), self.out, name=name, description=description,
                       provenance=self.provenance(), overwrite=True, latents=latents)
        tensors, meta = _optimiser_tensors(self.opt_g, "opt_g")
        t2, m2 = _optimiser_tensors(self.opt_d, "opt_d")
        tensors.update(t2)
        for prefix, net in (("D", self.D), ("G", self.G)):
            tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous()
                            for k, v in net.state_dict().items()})
        with atomic_output(self.out / STATE_FILE) as tmp:
            save_file(tensors, tmp)
        self.state.history.append({"iteration": self.state.iteration,
                                   "seconds": round(self.state.seconds, 1),
                                   "lr": self.opt_g.param_groups[0]["lr"],
                                   **{k: round(v, 4) for k, v in self.state.losses.items()}})
        info = {"state": {**asdict(self.state)}, "optimisers": {"opt_g": meta, "opt_d": m2},
                "rng": self.rng.bit_generator.state, "config": asdict(cfg)}
        atomic_write_bytes(self.out / STATE_JSON, json.dumps(info, indent=1).encode())

    def _load_state(self) -> None:
        info = json.loads((self.out / STATE_JSON).read_text())
        tensors = load_file(self.out / STATE_FILE)
        self.D.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
        raw = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
        if raw:  # states written before the averaged model have none: G is the checkpoint
            self.G.load_state_dict(raw)
        _load_optimiser(self.opt_g, tensors, "opt_g", info["optimisers"]["opt_g"])
        _load_optimiser(self.opt_d, tensors, "opt_d", info["optimisers"]["opt_d"])
        # an --lr given with --resume replaces the saved rate: resuming with a lower one is
        # how a run is annealed (the Adam moments carry over either way)
        saved_lr = self.opt_g.param_groups[0]["lr"]
        if self._lr_given:
            if saved_lr != self.config.lr:
                log.info("learning rate %g (was %g before the resume)", self.config.lr, saved_lr)
            for opt in (self.opt_g, self.opt_d):
                for group in opt.param_groups:
                    group["lr"] = self.config.lr
        else:
            self.config = replace(self.config, lr=saved_lr)
        self.rng.bit_generator.state = info["rng"]
        state = info["state"]
        self.state = TrainingState(state["iteration"], state["seconds"], state["losses"],
                                   state["history"])
        self.G.to(self.device).train()
        self.D.to(self.device).train()
        log.info("resumed %s at iteration %d", self.out, self.state.iteration)

    # ------------------------------------------------------------------------- samples

    def write_snapshot(self) -> Path:
        """The generator as it is now, as a loadable checkpoint beside its sample grid:
        GANs can degrade late in training, and the best iteration is chosen by eye and by
        `texprod quality`, not assumed to be the last."""
        return save_generator(self.model(),
                              self.out / "snapshots" / f"iter-{self.state.iteration:06d}",
                              name=self.config.name or self.out.name,
                              description=f"snapshot at iteration {self.state.iteration}",
                              provenance=self.provenance(), overwrite=True)

    def write_samples(self, size: int = 256, count: int = 4) -> Path:
        """A 2 x 2 grid of renders from fixed seeds (one pass of the network)."""
        model = self.model()
        cudnn = torch.backends.cudnn
        tiles = []
        # a Renderer fixes cuDNN's algorithms for rendering; training keeps its own choice
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                         deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32):
            renderer = Renderer(model, device=str(self.device))
            plan = renderer.plan(size, size, 0)  # one pass of the unmodified network
            for seed in range(count):
                field = NoiseField(model.config, 1000 + seed, waves=model.waves)
                tiles.append(render_canvas(renderer, field, plan))
        row1 = np.concatenate(tiles[:2], axis=1)
        row2 = np.concatenate(tiles[2:4], axis=1)
        grid = np.concatenate([row1, row2], axis=0)
        samples = self.out / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        path = samples / f"iter-{self.state.iteration:06d}.png"
        pyvips.Image.new_from_array(grid, interpretation="srgb").pngsave(str(path))
        return path


def _optimiser_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    state = opt.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{prefix}.{index}.{key}"] = torch.as_tensor(value).detach().cpu() \
                .contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def _load_optimiser(opt: torch.optim.Optimizer, tensors: dict, prefix: str, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def train_model(exemplars: list[str | Path], out: str, config: TrainConfig, device: str = "auto",
                resume: bool = False,
                progress: Callable[[int, dict[str, float], float], None] | None = None) -> dict:
    """Train, fit named latents (PSGAN), save; upload when `out` is an s3:// URI."""
    remote = out if is_s3(out) else None
    local = Path(out) if remote is None else \
        cache_root() / "training" / (config.name or out.rstrip("/").rsplit("/", 1)[-1])
    trainer = Trainer(exemplars, local, config, device=device, resume=resume)
    if remote is not None:  # the S3 destination answers now, not after the training
        head(f"{remote.rstrip('/')}/{CARD_FILE}", action="write the model to")
    if trainer.G.config.nz_global and config.crop_px < MIN_SIZE:
        # checked before training, not when the latents are fitted after it
        raise ConfigError(f"--size: got {config.crop_px} px crops; a psgan's named latents "
                          "are fitted on texture statistics, which need crops of at least "
                          f"{MIN_SIZE} px")
    trainer.run(progress)
    model = copy.deepcopy(trainer.model()).cpu()  # latents are fitted on the CPU
    latents = fit_latents(model, {p.stem: image for p, image in
                                  zip(trainer.exemplar_paths, trainer.exemplars, strict=True)},
                          steps=config.latent_steps, crop=config.crop_px, seed=config.seed)
    if latents:
        trainer.save(latents=latents)
    if remote is not None:
        prefix = remote.rstrip("/")
        for file in publish_order(read_card(local / CARD_FILE)):
            upload_file(local / file, f"{prefix}/{file}")
    training = trainer.provenance()["training"]
    return {"uri": remote or str(local), "path": local, "latents": sorted(latents),
            "iterations": trainer.state.iteration, "seconds": trainer.state.seconds,
            "seconds_per_iteration": training["seconds_per_iteration"],
            "device": training["device"]}


# --------------------------------------------------------------------------- warm start


def _input_groups(config: GeneratorConfig) -> dict[str, slice]:
    """Where each kind of noise channel sits in the input, [local | global | periodic]."""
    a = config.nz_local
    b = a + config.nz_global
    return {"local": slice(0, a), "global": slice(a, b),
            "periodic": slice(b, b + config.nz_periodic)}


def warm_start(generator: Generator, source: Generator) -> None:
    """Copy a trained generator's weights into `generator` (before training).

    Every layer must have the same shape, except the input layer when `generator` has
    extra kinds of input channels: a trained SGAN starts a PSGAN, its local channels' weights
    copied and the new global (and periodic) channels' weights zero, so the PSGAN begins by
    drawing exactly the SGAN's texture for every latent and learns what the global channels
    should change. Channel groups present in both must have the same size.
    """
    target, given = generator.config, source.config
    same = ("kernel", "upsample", "filters", "out_channels")
    for key in same:
        if getattr(target, key) != getattr(given, key):
            raise ConfigError(f"--init: the checkpoint's {key} is {getattr(given, key)}, this "
                              f"training's is {getattr(target, key)}; they must match")
    groups, source_groups = _input_groups(target), _input_groups(given)
    for name, part in source_groups.items():
        size = part.stop - part.start
        if size and size != groups[name].stop - groups[name].start:
            raise ConfigError(f"--init: the checkpoint has {size} {name} noise channels, this "
                              f"training has {groups[name].stop - groups[name].start}; pass "
                              f"--nz-{name} {size} or another checkpoint")
    first = next(m for m in generator.blocks[0] if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))
    # ConvTranspose2d weights are (C_in, C_out, k, k); Conv2d weights (C_out, C_in, k, k)
    in_dim = 0 if isinstance(first, nn.ConvTranspose2d) else 1
    state = generator.state_dict()
    with torch.no_grad():
        for key, value in source.state_dict().items():
            if value.shape == state[key].shape:
                state[key] = value.clone()
            elif key.startswith("blocks.0.") and key.endswith("weight"):
                state[key].zero_()  # new channels start silent: the source's output exactly
                for name, part in source_groups.items():
                    if part.stop > part.start:
                        state[key].narrow(in_dim, groups[name].start, part.stop - part.start) \
                            .copy_(value.narrow(in_dim, part.start, part.stop - part.start))
            else:
                raise ConfigError(f"--init: the checkpoint's {key} has shape "
                                  f"{tuple(value.shape)}, this training's {tuple(state[key].shape)}")
    generator.load_state_dict(state)


def warm_start_discriminator(discriminator: Discriminator, run: str | Path) -> str:
    """Copy the discriminator saved in training run directory `run` (its training state)
    into `discriminator`; returns the state file's sha256 for the provenance."""
    path = Path(run) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"--init-discriminator {run}: no {STATE_FILE} there; it must be the "
                          "--out directory of a texprod train run")
    with safe_open(path, "pt") as state:  # the discriminator only, not the optimisers
        saved = {k[2:]: state.get_tensor(k) for k in state.keys() if k.startswith("D.")}
    own = discriminator.state_dict()
    if saved.keys() != own.keys() or any(saved[k].shape != own[k].shape for k in own):
        def widths(state: dict) -> list[int]:  # conv output channels, the 1-logit layer left out
            convs = sorted((int(k.split(".")[1]), v.shape[0]) for k, v in state.items()
                           if v.dim() == 4)  # keys net.<layer>.weight
            return [c for _, c in convs][:-1]

        raise ConfigError(f"--init-discriminator {run}: its discriminator has widths "
                          f"{widths(saved)}, this training's {widths(own)}; they must match "
                          "(pass the run's --size)")
    discriminator.load_state_dict(saved)
    return sha256_file(path)


# ------------------------------------------------------------------------- named latents


def _latent_loss(generator: Generator, latent: torch.Tensor, target: list[torch.Tensor],
                 cells: int, seed: int) -> torch.Tensor:
    """Texture-statistics distance between the render of `latent` and the target stats."""
    rf = receptive_field(generator.blocks)
    field = NoiseField(generator.config, seed, waves=generator.waves,
                       global_field=ConstantField(latent))
    z = field.windows([(0, 0)], cells + 2 * rf.halo, cells + 2 * rf.halo)
    image = (forward_interior(generator.blocks, rf, z, (cells, cells)) + 1) / 2  # [0, 1]
    return sum(((s.mean(0) - t) ** 2).sum() / (t ** 2).sum()
               for s, t in zip(texture_stats(image), target, strict=True))


def fit_latents(generator: Generator, exemplars: dict[str, np.ndarray], steps: int = 60,
                crop: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    """One global latent per exemplar: the best of a few seeds, refined by gradient descent
    on the texture-statistics distance between its render and the exemplar."""
    config = generator.config
    if config.nz_global == 0:
        return {}
    cells = max(1, crop // receptive_field(generator.blocks).cell_px) * 2
    generator.eval()
    latents = {}
    for name, image in exemplars.items():
        target = [s.mean(0) for s in texture_stats(random_crops(image, crop, 8, seed))]
        with torch.no_grad():
            candidates = [global_latent(seed + k, config.nz_global) for k in range(16)]
            best = min(candidates, key=lambda c: float(
                _latent_loss(generator, c, target, cells, seed)))  # noqa: B023 - used at once
        latent = best.clone().requires_grad_(True)
        opt = torch.optim.Adam([latent], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            _latent_loss(generator, latent, target, cells, seed).backward()
            opt.step()
            with torch.no_grad():
                latent.clamp_(-1, 1)
        latents[name] = latent.detach().clone()
    return latents


__all__ = ["Discriminator", "TrainConfig", "Trainer", "fit_latents", "train_model", "warm_start",
           "warm_start_discriminator"]
