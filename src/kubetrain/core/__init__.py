"""Pure core: specs, quantities, selectors, states, planning and errors.

Nothing in this package performs IO, reads the clock or the environment.
"""
