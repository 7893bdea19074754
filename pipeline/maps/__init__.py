"""2-D views of gradients and their pictures: numpy + Pillow only (views, render, png)."""
