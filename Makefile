# kds-engine build, test and demo targets. Needs only Go (see go.mod) and make.
GO        ?= go
BIN       ?= $(CURDIR)/bin
PLUGINS   ?= $(BIN)/plugins
GOFLAGS_TEST ?= -race -count=1
# Every Go module under examples/ (third-party plugins with their own go.mod).
EXAMPLE_MODULES := $(patsubst %/go.mod,%,$(shell find examples -name go.mod 2>/dev/null))
# The plugin SDK is a module of its own (github.com/kds-engine/kds-engine/sdk,
# tagged sdk/vX.Y.Z); the root module uses it through a replace directive.
SDK_MODULE := sdk

.PHONY: all build plugins test vet check-proto proto model demo bench clean

all: build

## build: the kds-engine binary and the built-in plugins into ./bin
build: plugins
	$(GO) build -o $(BIN)/kds-engine ./cmd/kds-engine
	@if [ -d cmd/kds-bench ]; then $(GO) build -o $(BIN)/kds-bench ./cmd/kds-bench; fi

## plugins: the built-in plugins (and the examples') into ./bin/plugins
plugins:
	@mkdir -p $(PLUGINS) && chmod go-w $(BIN) $(PLUGINS)
	$(GO) build -o $(PLUGINS)/kds-plugin-policies ./plugins/policies
	$(GO) build -o $(PLUGINS)/kds-plugin-dataplanes ./plugins/dataplanes
	cd examples/featureflag && $(GO) build -o $(PLUGINS)/kds-plugin-featureflag .
	@chmod go-w $(PLUGINS)/kds-plugin-*

## test: vet, generated-code check, the spin model, the race-enabled suite
## (its e2e tests include docs/plugins.md's plugin, built from the guide's
## own snippets in a module outside the tree and loaded into an engine), the
## sdk module and the examples
test: vet check-proto model
	$(GO) test $(GOFLAGS_TEST) ./...
	@for f in $$(grep -rl --include='*_test.go' '^func Fuzz' engine cmd $(SDK_MODULE)); do for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do d=$$(dirname $$f); m=.; case $$d in $(SDK_MODULE)|$(SDK_MODULE)/*) m=$(SDK_MODULE); d=$${d#$(SDK_MODULE)}; d=$${d#/};; esac; echo "== fuzz $$t ./$$f"; (cd $$m && $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime 1000x -parallel 1 ./$$d) || exit 1; done; done
	@for m in $(SDK_MODULE) $(EXAMPLE_MODULES); do echo "== $$m"; (cd $$m && $(GO) vet ./... && $(GO) test $(GOFLAGS_TEST) ./...) || exit 1; done

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')) || exit 1; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd $(SDK_MODULE) && $(GO) vet ./...

## proto: regenerate Go code next to every .proto (proto/ and sdk/proto/) with
## the pinned generators
proto:
	$(GO) run ./proto/internal/protogen

check-proto:
	$(GO) run ./proto/internal/protogen -check

## model: check the Promela model of a session with spin (needs spin and gcc;
## skipped with a message when they are missing, an error when CI=true)
model:
	@model/check.sh $(BIN)/model

## demo: build everything and run a global and two zones in one process
demo: build
	$(BIN)/kds-engine demo --plugins-dir $(PLUGINS)

BENCH_OUT ?= $(BIN)/bench-results.txt
## bench: the long benchmark runs (not part of CI): the package benchmarks,
## then every kds-bench mode at its default sizes (tables and JSON lines
## appended to $(BENCH_OUT)); ha needs the PostgreSQL server of --postgres-url
## (default postgres://postgres@127.0.0.1:5432/postgres)
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3x ./engine/...
	$(GO) build -o $(BIN)/bench-plugins/kds-plugin-synctest ./engine/internal/testsupport/syncplugin
	@for m in transport sync update fanout resume memory torture "torture --naive" wan hostile ha "scale --n 10000,100000"; do \
		echo "== kds-bench $$m"; \
		$(BIN)/kds-bench $$m -o both --plugins-dir $(BIN)/bench-plugins | tee -a $(BENCH_OUT) || exit 1; \
	done

clean:
	rm -rf $(BIN)
