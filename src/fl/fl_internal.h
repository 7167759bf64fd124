/*
 * Internal helpers of the protocol core: little-endian field access used by
 * the encoders and decoders.
 */
#ifndef EDGEFL_FL_INTERNAL_H
#define EDGEFL_FL_INTERNAL_H

#include <stdint.h>

#include "edgefl/wire.h"

uint16_t ef__rd16(const uint8_t *p);
uint32_t ef__rd32(const uint8_t *p);
uint64_t ef__rd64(const uint8_t *p);
float ef__rdf32(const uint8_t *p);
double ef__rdf64(const uint8_t *p);
void ef__wr16(uint8_t *p, uint16_t v);
void ef__wr32(uint8_t *p, uint32_t v);
void ef__wr64(uint8_t *p, uint64_t v);
void ef__wrf32(uint8_t *p, float f);
void ef__wrf64(uint8_t *p, double d);

#endif /* EDGEFL_FL_INTERNAL_H */
