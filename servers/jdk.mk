# The JDK the JVM servers build and run with, included by their Makefiles: the newest JDK
# under /usr/lib/jvm (by JAVA_VERSION in its release file), so a JIT, GC and NIO as recent as
# the machine has represent the JVM; without one there, java, javac and jar from PATH.
# `make JDK=/path/to/jdk` chooses another. The sources stay at --release 17, so a machine with
# only JDK 17 (Debian 12's default) still builds them.
ifeq ($(origin JDK),undefined)
JDK := $(shell for r in /usr/lib/jvm/*/release; do \
	d=$${r%/release}; test -x "$$d/bin/javac" && \
	sed -n "s|^JAVA_VERSION=\"\([0-9]*\).*|\1 $$d|p" "$$r"; \
	done 2>/dev/null | sort -n | tail -n 1 | cut -d ' ' -f 2)
endif
ifneq ($(JDK),)
JAVA := $(JDK)/bin/java
JAVAC := $(JDK)/bin/javac
JAR := $(JDK)/bin/jar
else
JAVA ?= java
JAVAC ?= javac
JAR ?= jar
endif
JAVA_RELEASE := 17
