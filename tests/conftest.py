"Test ordering for the parallel run (`make test` runs pytest-xdist with --dist loadfile): the longest files go first."

# whole-study files, minutes each on 2 cores: started first, so no worker idles at the end while one of them runs alone
LONGEST_FIRST = ("test_reduced_study.py", "test_monitoring_study.py", "test_objectives_study.py", "test_pipeline.py", "test_docs.py")


def pytest_collection_modifyitems(session, config, items):
    "Put the files of LONGEST_FIRST first, in that order; everything else keeps its order."
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))  # stable: the rest stay in collection order
