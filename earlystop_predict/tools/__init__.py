"""Offline tools above the runtime: the real-curve collector (:mod:`.collect`), replay of
stopping rules on stored runs (:mod:`.replay`), reports (:mod:`.report`) and the demo
(:mod:`.demo`). Nothing in the runtime core imports them.
"""
