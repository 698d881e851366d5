"""Model recipes: built-in architectures and the hyper-parameters that train them."""

from tailscope.models.architectures import mlp, small_cnn
from tailscope.models.recipes import OPTIMIZERS, RECIPES, Recipe, get_recipe

__all__ = ["OPTIMIZERS", "RECIPES", "Recipe", "get_recipe", "mlp", "small_cnn"]
