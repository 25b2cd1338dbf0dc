"""L2-regularised logistic regression on fixed features by full-batch L-BFGS in float64, on any device.

One objective for the probe and the many-shot linear protocol: mean loss + l2 / 2 ||W||^2 with the bias
unpenalised. The loss is the multinomial cross-entropy, or for one binary label the logistic loss of one weight
vector (what scikit-learn fits for two classes). scikit-learn's `LogisticRegression(C=C)` minimises
C * sum(loss) + 1/2 ||W||^2, whose minimiser is this objective's at l2 = 1 / (C * n): `l2_of_C` converts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TOLERANCE_GRAD = 1e-7  # on the largest gradient entry of the mean objective
TOLERANCE_CHANGE = 1e-12  # on the change of the objective, or of the parameters, in one iteration
MAX_ITER = 300


@dataclass
class LogisticFit:
    weight: torch.Tensor  # (dim, classes), or (dim, 1) for a binary label
    bias: torch.Tensor
    iterations: int  # L-BFGS iterations this fit took
    evaluations: int = 0  # objective and gradient evaluations (iterations plus line-search steps)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Decision values: class logits (n, classes), or for a binary label the logit of class 1 (n,)."""
        out = x.to(self.weight.device, torch.float64) @ self.weight + self.bias
        return out[:, 0] if out.shape[1] == 1 else out


def l2_of_C(C: float, n: int) -> float:
    """The l2 of this objective whose minimiser is scikit-learn's at inverse regularisation C on n samples."""
    return 1.0 / (C * n)


def fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, init: LogisticFit | None = None,
        max_iter: int = MAX_ITER, binary: bool = False, tolerance_change: float = TOLERANCE_CHANGE) -> LogisticFit:
    """argmin mean loss(xW + b, y) + l2/2 ||W||^2 from `init` (a warm start) or zeros, on x's device.

    `binary`: y holds 0/1 and one weight vector is fitted (scikit-learn's two-class model)."""
    x = x.double()
    y = y.to(x.device)
    columns = 1 if binary else num_classes
    start_w = init.weight if init is not None else torch.zeros(x.shape[1], columns, dtype=torch.float64)
    start_b = init.bias if init is not None else torch.zeros(columns, dtype=torch.float64)
    weight = start_w.detach().to(x.device, torch.float64).clone().requires_grad_(True)
    bias = start_b.detach().to(x.device, torch.float64).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=TOLERANCE_GRAD,
                                  tolerance_change=tolerance_change, history_size=20, line_search_fn="strong_wolfe")
    target = y.double() if binary else y

    def closure():
        optimizer.zero_grad()
        logits = x @ weight + bias
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], target) if binary else F.cross_entropy(logits,
                                                                                                        target)
        loss = loss + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    state = optimizer.state[optimizer._params[0]]
    return LogisticFit(weight.detach(), bias.detach(), int(state.get("n_iter", 0)), int(state.get("func_evals", 0)))
