cp .gpu/part01 .gpu/part02 /tmp/pv/ && ls -la /tmp/pv
