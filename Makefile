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
DEPS_BUILD := libsqlite3-dev sqlite3 libopenblas-dev libstb-dev libcjson-dev
DEPS_TEST  := $(DEPS_BUILD) libcmocka-dev dataset-fashion-mnist

CORE_SRC := $(wildcard core/*.c core/layers/*.c core/detectors/*.c)
EXT_SRC  := $(wildcard ext/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
EXT_OBJ  := $(EXT_SRC:%.c=$(BUILD)/%.o)
# core built with ANOM_TEST for unit tests (allocation fault injection)
TCORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/t/%.o)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps deps-test deps-demo test demo bench clean
all: deps
	@$(MAKE) --no-print-directory anomaly.so

deps:
	@scripts/deps.sh $(DEPS_BUILD)

deps-test:
	@scripts/deps.sh $(DEPS_TEST)

anomaly.so: $(CORE_OBJ) $(EXT_OBJ)
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

test: deps-test anomaly.so $(UNIT_BIN) $(BUILD)/tests/sqltest
	@BUILD=$(BUILD) sh tests/run.sh $(UNIT_BIN) $(BUILD)/tests/sqltest

$(BUILD)/tests/sqltest: tests/sql/test_sql.c $(TCORE_OBJ) anomaly.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANOM_TEST -o $@ $< $(TCORE_OBJ) $(LDFLAGS) $(LDLIBS) -lsqlite3 -lcmocka

clean:
	rm -rf build build-san-* anomaly.so

-include $(shell find build* -name '*.d' 2>/dev/null)
