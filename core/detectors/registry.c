/*
** registry.c - the list of detectors. Adding a method: one file under
** core/detectors/ exporting its detector_ops, and one line in each list here.
*/
#include "../detector.h"

#include <string.h>

extern const detector_ops alad_ops;
extern const detector_ops anogan_ops;
extern const detector_ops caae_ops;
extern const detector_ops defectgan_ops;
extern const detector_ops egbad_ops;
extern const detector_ops ganomaly_ops;
extern const detector_ops skipganomaly_ops;

static const detector_ops *const all_detectors[] = {
  &alad_ops,
  &anogan_ops,
  &caae_ops,
  &defectgan_ops,
  &egbad_ops,
  &ganomaly_ops,
  &skipganomaly_ops,
};

#define NDETECTORS (sizeof(all_detectors) / sizeof(all_detectors[0]))

const detector_ops *detector_find(const char *name) {
  if( !name ) return NULL;
  for(size_t i = 0; i < NDETECTORS; i++)
    if( strcmp(all_detectors[i]->name, name) == 0 ) return all_detectors[i];
  return NULL;
}

const char *detector_names(void) {
  return "alad, anogan, caae, defectgan, egbad, ganomaly, skipganomaly";
}
