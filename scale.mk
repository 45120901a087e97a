# Scale targets (docs/scale.md): batch segmentation on Ray Data, video overlay, and their benchmarks.
# Included by the top-level Makefile (which defines PY). NOT FOR CLINICAL USE.

INPUT  ?=  # a folder of images or a glob pattern (make predict-batch) / a video file (make predict-video)
OUTPUT ?=  # the output folder (predict-batch) / video file (predict-video)

.PHONY: predict-batch predict-video bench-batch bench-video

predict-batch: setup ## masks for INPUT=folder-or-glob into OUTPUT=dir on Ray Data (RAY_ADDRESS for a cluster)
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict-batch INPUT=DIR_OR_GLOB OUTPUT=DIR"; exit 2; }
	$(PY) bin/predict_batch.py --conf conf/predict_batch.yaml --input '$(INPUT)' --output '$(OUTPUT)'

predict-video: setup ## overlay the predicted mask on every frame of INPUT=video into OUTPUT=video; report -> reports/video/<stem>.json
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict-video INPUT=VIDEO OUTPUT=VIDEO"; exit 2; }
	$(PY) bin/predict_video.py --conf conf/predict_video.yaml --input '$(INPUT)' --output '$(OUTPUT)'

bench-batch: setup ## 500 images: Ray Data vs a plain single-process loop -> reports/bench/batch.json
	PYTHONPATH=$(CURDIR) $(PY) bin/bench_batch.py --conf conf/bench_batch.yaml

bench-video: setup ## 720p video from validation frames: fps, stage timings, smoothing -> reports/bench/video*.json
	PYTHONPATH=$(CURDIR) $(PY) bin/bench_video.py --conf conf/bench_video.yaml
