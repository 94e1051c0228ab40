# sqlite-anomaly: a SQLite extension that scores images for anomalies.
#
#   make            build ./anomaly.so (load it with .load ./anomaly)
#   make test       build and run every test (SANITIZE=1 for ASan+UBSan)
#   make demo       Fashion-MNIST demo in demo.db
#   make bench      benchmarks under tests/bench/
#
# make and make test install missing Debian packages when run as root, and
# otherwise print the apt-get command to run.

CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fvisibility=hidden \
           -I. -Icore -I/usr/include/stb
LDLIBS  += -lopenblas -lcjson -lm -lpthread

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(SANITIZE),thread)
CFLAGS  += -fsanitize=thread
LDFLAGS += -fsanitize=thread
endif

BUILD   := build$(if $(SANITIZE),-san-$(SANITIZE))

# OpenBLAS kernels for CPUs newer than the installed OpenBLAS (scripts/blas_env.sh)
BLAS_CORE := $(shell scripts/blas_env.sh)
ifneq ($(BLAS_CORE),)
export OPENBLAS_CORETYPE := $(BLAS_CORE)
endif
DEPS_BUILD := libsqlite3-dev sqlite3 libopenblas-dev libstb-dev libcjson-dev
DEPS_TEST  := $(DEPS_BUILD) libcmocka-dev dataset-fashion-mnist

CORE_SRC := $(wildcard core/*.c core/layers/*.c core/detectors/*.c)
EXT_SRC  := $(wildcard ext/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
EXT_OBJ  := $(EXT_SRC:%.c=$(BUILD)/%.o)
# core built with ANOM_TEST for unit tests (allocation fault injection)
TCORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/t/%.o)

# the loadable extension; sanitizer builds keep theirs in their build folder
EXT_SO   := $(if $(SANITIZE),$(BUILD)/anomaly.so,anomaly.so)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# the extension through SQL: tests/sql/test_NAME.c -> sql_NAME
SQL_SRC  := $(wildcard tests/sql/test_*.c)
SQL_BIN  := $(SQL_SRC:tests/sql/test_%.c=$(BUILD)/tests/sql_%)

.PHONY: all deps deps-test deps-demo test demo bench clean
all: deps
	@$(MAKE) --no-print-directory anomaly.so

deps:
	@scripts/deps.sh $(DEPS_BUILD)

deps-test:
	@scripts/deps.sh $(DEPS_TEST)

$(EXT_SO): $(CORE_OBJ) $(EXT_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/t/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANOM_TEST -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(TCORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANOM_TEST -Itests -o $@ $< $(TCORE_OBJ) $(LDFLAGS) $(LDLIBS) -lcmocka

deps-demo:
	@scripts/deps.sh $(DEPS_BUILD) dataset-fashion-mnist

# the Fashion-MNIST demo: DEMO_CLASS=n picks the normal class, TRAIN=1 trains
demo: deps-demo
	@$(MAKE) --no-print-directory anomaly.so
	@scripts/demo.sh $(if $(TRAIN),train)

# benchmarks into build/bench/report.md; BENCH_QUICK=1 for a smoke run
bench: deps-demo
	@$(MAKE) --no-print-directory anomaly.so
	@sh tests/bench/run.sh

test: deps-test
	@$(MAKE) --no-print-directory $(EXT_SO) $(UNIT_BIN) $(SQL_BIN)
	@ANOMALY_EXT=./$(basename $(EXT_SO)) SANITIZE=$(SANITIZE) sh tests/run.sh $(UNIT_BIN) $(SQL_BIN)

$(BUILD)/tests/sql_%: tests/sql/test_%.c tests/sql/sqltest.h $(TCORE_OBJ) $(EXT_SO)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANOM_TEST -o $@ $< $(TCORE_OBJ) $(LDFLAGS) $(LDLIBS) -lsqlite3 -lcmocka

clean:
	rm -rf build build-san-* anomaly.so

-include $(shell find build* -name '*.d' 2>/dev/null)
