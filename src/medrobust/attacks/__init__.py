"""Attacks: one iterative gradient engine and the attacks as thin configurations of it, plus
query-based, structural and transfer attacks. ``build_attack("sia:eps=8/255")`` builds any by name."""
