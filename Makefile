# sqlite-anomaly: a SQLite extension that scores images for anomalies.
#
#   make            build ./anomaly.so (load it with .load ./anomaly)
#   make test       build and run every test (SANITIZE=1 for ASan+UBSan,
#                   SANITIZE=thread for ThreadSanitizer)
#   make valgrind   the SQL tests under valgrind memcheck
#   make fuzz       libFuzzer harnesses, FUZZ_SECONDS each (tests/fuzz/README.md)
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
# Let the compiler vectorise the element-wise loops (activations, batch norm,
# the convolutions' epilogue): GCC's -O2 cost model leaves every loop that
# needs a remainder scalar, and trapping math keeps it from turning a
# "v < 0 ? a : b" into a select. Neither changes a result: no floating-point
# exceptions are used, and nothing is reassociated.
CFLAGS  += -fno-trapping-math $(shell $(CC) -fvect-cost-model=cheap -x c -c -o /dev/null /dev/null \
                                 2>/dev/null && echo -fvect-cost-model=cheap)
LDLIBS  += -lopenblas -lcjson -lm -lpthread

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(SANITIZE),thread)
CFLAGS  += -fsanitize=thread
LDFLAGS += -fsanitize=thread
# OpenBLAS's own worker threads are not instrumented, so ThreadSanitizer
# cannot see them synchronise and reports their writes as races with ours:
# one BLAS thread; the threads under test are the callers'
export OPENBLAS_NUM_THREADS := 1
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

.PHONY: all deps deps-test deps-demo test demo bench clean valgrind fuzz static install uninstall FORCE
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

# anomaly_debug() reports the commit and flags it was built from
# (ext/settings.c); the header is rewritten only when they change
BUILD_INFO := $(BUILD)/build_info.h
INFO_CFLAGS := $(CFLAGS)
$(BUILD_INFO): FORCE
	@mkdir -p $(dir $@)
	@printf '#define ANOM_COMMIT "%s"\n#define ANOM_CFLAGS "%s"\n' \
	  "$$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)" \
	  "$(INFO_CFLAGS)" >$@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi
FORCE:
$(BUILD)/ext/settings.o $(BUILD)/static/ext/settings.o: $(BUILD_INFO)
$(BUILD)/ext/settings.o $(BUILD)/static/ext/settings.o: CFLAGS += -I$(BUILD)

$(BUILD)/t/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANOM_TEST -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(TCORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANOM_TEST -Itests -o $@ $< $(TCORE_OBJ) $(LDFLAGS) $(LDLIBS) -lcmocka

# ---- linking it into a program (ext/anomaly.h): the same sources compiled
# with SQLITE_CORE, so that they call SQLite directly, not through a loader's
# table of routines
STATIC_LIB := libsqlite_anomaly.a
STATIC_OBJ := $(CORE_SRC:%.c=$(BUILD)/static/%.o) $(EXT_SRC:%.c=$(BUILD)/static/%.o)

static: deps
	@$(MAKE) --no-print-directory $(STATIC_LIB)

$(STATIC_LIB): $(STATIC_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/static/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSQLITE_CORE -MMD -MP -c -o $@ $<

# examples/c/: programs with the static library linked in (tests/sql/example_c.sh)
$(BUILD)/examples/%: examples/c/%.c ext/anomaly.h $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iext -o $@ $< $(STATIC_LIB) $(LDFLAGS) -lsqlite3 $(LDLIBS)

# ---- make install [PREFIX=/usr/local] [DESTDIR=...]: the loadable extension
# (.load /usr/local/lib/sqlite3/anomaly), the static library, its header and
# a pkg-config file (pkg-config --static --libs sqlite-anomaly)
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
EXTDIR  ?= $(LIBDIR)/sqlite3
PCDIR   ?= $(LIBDIR)/pkgconfig
VERSION := $(shell sed -n 's/^.define ANOM_VERSION "\(.*\)"/\1/p' core/common.h)

install: anomaly.so $(STATIC_LIB)
	install -d $(DESTDIR)$(EXTDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(PCDIR)
	install -m 644 anomaly.so $(DESTDIR)$(EXTDIR)/anomaly.so
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/$(STATIC_LIB)
	install -m 644 ext/anomaly.h $(DESTDIR)$(INCDIR)/anomaly.h
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' \
	  'extensiondir=$(EXTDIR)' '' 'Name: sqlite-anomaly' \
	  'Description: GAN-based image anomaly detection inside SQLite' \
	  'Version: $(VERSION)' 'Requires: sqlite3' 'Cflags: -I$${includedir}' \
	  'Libs: -L$${libdir} -lsqlite_anomaly' 'Libs.private: $(LDLIBS)' \
	  > $(DESTDIR)$(PCDIR)/sqlite-anomaly.pc

uninstall:
	rm -f $(DESTDIR)$(EXTDIR)/anomaly.so $(DESTDIR)$(LIBDIR)/$(STATIC_LIB) \
	  $(DESTDIR)$(INCDIR)/anomaly.h $(DESTDIR)$(PCDIR)/sqlite-anomaly.pc
	-rmdir $(DESTDIR)$(EXTDIR) 2>/dev/null

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
	@ANOMALY_EXT=./$(basename $(EXT_SO)) ANOMALY_OOM_EXT=$(BUILD)/tests/anomaly_oom.so SANITIZE=$(SANITIZE) sh tests/run.sh $(UNIT_BIN) $(SQL_BIN)

# the SQL tests under valgrind memcheck, with OpenBLAS's AVX2 kernels
# (valgrind does not decode AVX-512)
VALGRIND ?= valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect
valgrind:
	@scripts/deps.sh $(DEPS_TEST) valgrind
	@$(MAKE) --no-print-directory $(EXT_SO) $(SQL_BIN)
	@OPENBLAS_CORETYPE=Haswell ANOMALY_EXT=./$(basename $(EXT_SO)) \
	  ANOMALY_OOM_EXT=$(BUILD)/tests/anomaly_oom.so VALGRIND="$(VALGRIND)" sh tests/run.sh $(SQL_BIN)

$(BUILD)/tests/sql_%: tests/sql/test_%.c tests/sql/sqltest.h $(TCORE_OBJ) $(EXT_SO) $(BUILD)/tests/anomaly_oom.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANOM_TEST -o $@ $< $(TCORE_OBJ) $(LDFLAGS) $(LDLIBS) -lsqlite3 -lcmocka -ldl

# the extension over the test build of core/, whose allocations can be made
# to fail (tests/sql/test_oom.c)
$(BUILD)/tests/anomaly_oom.so: $(TCORE_OBJ) $(EXT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

clean:
	rm -rf build build-san-* build-fuzz anomaly.so $(STATIC_LIB)

# ---- fuzzing (tests/fuzz/README.md): libFuzzer harnesses built with clang,
# ASan and UBSan into build-fuzz/. `make fuzz` runs each for FUZZ_SECONDS on
# a work copy of its seed corpus (build-fuzz/corpus/NAME); FUZZ=image runs one;
# an input slower than FUZZ_TIMEOUT seconds counts as a finding.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 60
FUZZ_NAMES   := image model options registry
FUZZ         ?= $(FUZZ_NAMES)
FUZZ_BUILD   := build-fuzz
# every check aborts
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_ENV     := OPENBLAS_NUM_THREADS=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE -DSQLITE_CORE -Wall -Wextra \
                -I. -Icore -I/usr/include/stb $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
                -fsanitize-coverage-ignorelist=tests/fuzz/coverage_ignore.txt
FUZZ_LDLIBS  := -lsqlite3 -lopenblas -lcjson -lm -lpthread
FUZZ_CORE    := $(CORE_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_EXT     := $(EXT_SRC:%.c=$(FUZZ_BUILD)/%.o)
# what each harness links, its longest input and its dictionary
FUZZ_OBJ_image    := $(FUZZ_CORE)
FUZZ_OBJ_model    := $(FUZZ_CORE)
FUZZ_OBJ_options  := $(FUZZ_CORE) $(FUZZ_EXT)
FUZZ_OBJ_registry := $(FUZZ_CORE) $(FUZZ_EXT)
FUZZ_LEN_image    := 65536
FUZZ_LEN_model    := 262144
FUZZ_LEN_options  := 4096
FUZZ_LEN_registry := 262144
FUZZ_DICT_image    := tests/fuzz/image.dict
FUZZ_DICT_model    := tests/fuzz/model.dict
FUZZ_DICT_options  := tests/fuzz/options.dict
FUZZ_DICT_registry := tests/fuzz/model.dict

.PHONY: fuzz
fuzz: $(FUZZ:%=$(FUZZ_BUILD)/fuzz_%)
	@failed=""; for f in $(FUZZ); do \
	  $(MAKE) --no-print-directory fuzz-run-$$f || failed="$$failed $$f"; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "fuzz: crashes in:$$failed (inputs in $(FUZZ_BUILD)/artifacts/)"; exit 1; fi

# one run: a work copy of the seed corpus, so that tests/ is never written
fuzz-run-%: $(FUZZ_BUILD)/fuzz_%
	@mkdir -p $(FUZZ_BUILD)/corpus/$* $(FUZZ_BUILD)/artifacts
	@cp -n tests/fuzz/corpus/$*/* $(FUZZ_BUILD)/corpus/$*/
	@echo "fuzz_$*: $(FUZZ_SECONDS) s on $(FUZZ_BUILD)/corpus/$*"
	$(FUZZ_ENV) ./$< -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_LEN_$*) \
	  -dict=$(FUZZ_DICT_$*) -rss_limit_mb=2048 -timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_BUILD)/artifacts/$*- $(FUZZ_BUILD)/corpus/$*

# kept between builds (make would delete them as intermediate files)
.SECONDARY: $(FUZZ_CORE) $(FUZZ_EXT)
$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

.SECONDEXPANSION:
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $$(FUZZ_OBJ_$$*) $$(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ_$*) $(FUZZ_LDLIBS)

-include $(shell find build* -name '*.d' 2>/dev/null)
