"""Agents in the dream: recipes, training through the SB3 adapter, evaluation in the real env."""

from worldflux_gym.agents.evaluate import Evaluation, evaluate_agent, load_agent
from worldflux_gym.agents.recipes import Recipe, available_recipes, load_recipe
from worldflux_gym.agents.train import train_agent

__all__ = [
    "Evaluation",
    "Recipe",
    "available_recipes",
    "evaluate_agent",
    "load_agent",
    "load_recipe",
    "train_agent",
]
