"""The checks that say when a robustness figure may be optimistic — AutoAttack's (Croce & Hein,
ICML 2020, sec. 5) and Athalye et al.'s (ICML 2018) — worded once, for every row they concern:
the undefended model's white-box row and each defense's adaptive row.

* **randomised forward**: two forward passes on the same images differ; a gradient from one draw
  is noise, so the gradient attacks average over draws (expectation over transformation);
* **probabilities as output**: a model that returns a softmax (or sigmoid) instead of logits
  gives a saturated cross-entropy with vanishing gradients; the logits are recovered (``log p``),
  and APGD-T's DLR loss, invariant to the logits' scale, is run as well where it is configured;
* **zero gradients**: the input gradient of the loss is exactly zero for more than
  :data:`ZERO_GRADIENT_SHARE` of the images — masked gradients, so the gradient attacks may be
  blind there;
* **a query or transfer attack beats the gradient attacks**: an attack that uses no gradient
  broke an image every gradient attack at that budget left right — the gradient attacks are
  underestimating the attacker;
* for a defense, also: accuracy that does not fall to 0% at a large budget.
"""

from __future__ import annotations

MASKING_WARNING = "possible gradient masking: the adaptive figure may be optimistic"
MASKING_NOT_ASSESSED = "gradient masking not assessed: no gradient attack could run through the defense"
MASKING_MOOT = ("signs of gradient masking were seen, but the worst-case accuracy is already 0%: that figure "
                "cannot read better than it is")
WHITE_BOX_UNDERESTIMATED = "white-box attacks underestimated: gradient masking likely"
ZERO_GRADIENT_SHARE = 0.01
"""The share of images with an exactly zero input gradient above which gradient masking is suspected."""


def randomised(draws: int) -> str:
    return (f"the model's forward pass is random (two passes on the same images differ): the gradient attacks "
            f"average each gradient over {draws} draws (expectation over transformation)")


def probabilities(dlr: bool) -> str:
    return ("the model returns probabilities, not logits: the cross-entropy is computed on the logits recovered "
            "as log p" + ("; APGD-T's DLR loss, which no rescaling of the logits changes, runs too" if dlr else ""))


def zero_gradients(count: int, n: int) -> str:
    return (f"gradient masking suspected: the loss's gradient is exactly zero for {count} of {n} images, where the "
            "gradient attacks cannot move")


def query_beats_gradients(count: int, eps_text: str, by: str) -> str:
    return (f"{WHITE_BOX_UNDERESTIMATED}: {by} broke {count} image(s) at {eps_text} that every gradient attack at "
            "that budget left right")
