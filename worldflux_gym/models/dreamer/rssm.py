"""The recurrent state-space model (RSSM) of DreamerV3.

The latent state is ``(deter, stoch)``: ``deter`` ``[B, D]`` is a GRU state that carries history,
``stoch`` ``[B, S, K]`` is ``S`` one-hot samples of ``K``-way categoricals. One step under action
``a``::

    deter' = GRU(deter, dense([a, stoch]))        # the action enters here, so everything after
    prior  = p(stoch' | deter')                    #   the step depends on the action taken
    post   = q(stoch' | deter', embed(o'))         # only when a real observation is available

Categoricals mix in ``unimix`` of the uniform distribution (1% in DreamerV3) so that no class has
probability zero, which keeps the KL terms finite. Samples pass gradients straight through.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from worldflux_gym.models.dreamer.networks import MLP, NormGRUCell, StateLinear


class RSSM(nn.Module):
    def __init__(
        self,
        deter: int,
        stoch: int,
        classes: int,
        hidden: int,
        action_dim: int,
        embed_dim: int,
        unimix: float,
    ):
        super().__init__()
        self.deter_size, self.stoch, self.classes, self.unimix = deter, stoch, classes, unimix
        self.img_in = StateLinear(action_dim, stoch, classes, hidden, bias=False)
        self.img_norm = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU())
        self.gru = NormGRUCell(hidden, deter)
        self.prior_net = MLP(deter, hidden, 1, stoch * classes)
        self.post_net = MLP(deter + embed_dim, hidden, 1, stoch * classes)
        # A learned starting point: deter_0 = tanh(w), so the model can place it where it helps.
        self.initial_deter = nn.Parameter(torch.zeros(deter))

    @property
    def feature_size(self) -> int:
        return self.deter_size + self.stoch * self.classes

    # --- distributions -------------------------------------------------------------------------
    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Flat logits ``[..., S*K]`` -> probabilities ``[..., S, K]`` with the uniform mix-in."""
        probs = torch.softmax(logits.unflatten(-1, (self.stoch, self.classes)), dim=-1)
        return (1.0 - self.unimix) * probs + self.unimix / self.classes

    def sample(
        self, probs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One-hot samples ``[..., S, K]`` (the mode when ``deterministic``).

        Sampling is by inverse CDF with one uniform number per categorical, drawn from
        ``generator`` (which must live on the probabilities' device). When gradients are on, the
        sample carries the straight-through gradient of ``probs``.
        """
        if deterministic:
            index = probs.argmax(-1)
        else:
            u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=probs.dtype)
            index = (probs.cumsum(-1) < u.unsqueeze(-1)).sum(-1).clamp_max(self.classes - 1)
        one_hot = F.one_hot(index, self.classes).to(probs.dtype)
        if probs.requires_grad:
            one_hot = one_hot + probs - probs.detach()
        return one_hot

    @staticmethod
    def kl(post: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """KL(post || prior) of ``[..., S, K]`` categoricals, summed over the ``S`` latents: ``[...]``."""
        return (post * (post.log() - prior.log())).sum((-2, -1))

    # --- steps ---------------------------------------------------------------------------------
    def initial_deter_state(self, batch_size: int) -> torch.Tensor:
        """``[B, D]``: the learned starting GRU state."""
        return torch.tanh(self.initial_deter).expand(batch_size, -1)

    def recur(self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The GRU step: ``deter`` ``[B, D]``, ``stoch`` ``[B, S, K]``, action features ``[B, A]``."""
        return self.gru(self.img_norm(self.img_in(action, stoch)), deter)

    def prior(self, deter: torch.Tensor) -> torch.Tensor:
        """``p(stoch | deter)`` as probabilities ``[B, S, K]``."""
        return self._probs(self.prior_net(deter))

    def posterior(self, deter: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        """``q(stoch | deter, embed(o))`` as probabilities ``[B, S, K]``."""
        return self._probs(self.post_net(torch.cat([deter, embed], dim=-1)))
