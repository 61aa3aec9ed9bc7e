"""Attacks: one iterative gradient engine and the attacks as thin configurations of it, plus
query-based, structural and transfer attacks. ``build_attack("sia:eps=8/255")`` builds any by name.

Every attack follows torchattacks' calling convention: hyper-parameters in the constructor, the
model and the batch in the call, ``x_adv = SIA(eps=8/255)(model, x, y)``, with ``x`` float
images in [0, 1] of shape (B, C, H, W) and ``y`` (B,) class indices; ``x_adv`` has the same
shape and dtype, lies in [0, 1] and (for the bounded attacks) within ``eps`` of ``x``.

============================  =============  ==============================================
class                         registry name  what
============================  =============  ==============================================
:class:`FGSM`                 ``fgsm``       one signed-gradient step (Goodfellow et al. 2015)
:class:`PGD`                  ``pgd``        projected gradient descent (Madry et al. 2018)
:class:`MIFGSM`               ``mifgsm``     momentum iterative FGSM (Dong et al. 2018)
:class:`SIA`                  ``sia``        structure invariant attack (Wang et al. 2023)
:class:`SquareAttack`         ``square``     score-based black-box search (Andriushchenko 2020)
:class:`APGD`                 ``apgd``       Auto-PGD, CE / DLR / targeted (Croce & Hein 2020)
:class:`AutoAttack`           ``autoattack`` APGD-CE, APGD-T, Square in sequence (Croce & Hein 2020)
:class:`BlockShuffle`         ``block-shuffle``  the study's visible block rearrangement
============================  =============  ==============================================

Importing this package registers them (its imports run the ``@register_attack`` decorators).
"""

from medrobust.attacks.apgd import APGD
from medrobust.attacks.autoattack import AutoAttack
from medrobust.attacks.block_shuffle import BlockShuffle
from medrobust.attacks.budget import Budget
from medrobust.attacks.engine import Attack, IterativeAttack
from medrobust.attacks.gradient_attacks import FGSM, MIFGSM, PGD
from medrobust.attacks.registry import (
    attack_parameters,
    build_attack,
    list_attacks,
    parse_attack_spec,
    register_attack,
)
from medrobust.attacks.sia import SIA
from medrobust.attacks.sit import structure_invariant_copies, structure_invariant_transform
from medrobust.attacks.square import SquareAttack
from medrobust.specs.eps_limit import MAX_EPS, VISIBLE_EPS

__all__ = [
    "APGD",
    "FGSM",
    "MAX_EPS",
    "MIFGSM",
    "PGD",
    "SIA",
    "VISIBLE_EPS",
    "Attack",
    "AutoAttack",
    "BlockShuffle",
    "Budget",
    "IterativeAttack",
    "SquareAttack",
    "attack_parameters",
    "build_attack",
    "list_attacks",
    "parse_attack_spec",
    "register_attack",
    "structure_invariant_copies",
    "structure_invariant_transform",
]
