"""Planning: a recipe becomes steps with keys; the files a source is made of; why a step must run."""
