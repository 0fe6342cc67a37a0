#include "SwiftLeakPreload.h"
