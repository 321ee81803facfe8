"A small study config on a tiny model, shared by the tests that run whole studies (format it with `model=` a model directory)."

SMALL = '''name = "small"
stages = ["artifacts", "extraction", "vector", "sweeps", "report"]
[model]
name = "{model}"
[trait]
name = "pirate"
[extraction]
n_questions = 10
n_per_question = 2
max_new_tokens = 8
batch_size = 4
[steering]
layer = 2
alpha = 2.0
[evaluation]
n_questions = 2
n_samples = 2
max_new_tokens = 8
batch_size = 8
[sweeps]
alphas = [0.0, 2.0]
layers = [3]
'''
