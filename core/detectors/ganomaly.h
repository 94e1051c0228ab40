/*
** ganomaly.h - GANomaly's network builders, for the detectors that reuse its
** networks and tensor names (defectgan.c).
**
**   net nt;
**   net_init(&nt, "netg.encoder1.", nc, isize, isize);
**   ganomaly_build_encoder(&nt, isize, nz, nc, ngf, extralayers, 0, 1);
**   if( (rc = model_add_net(m, &nt, e)) ) return rc;   (reports a bad shape)
**   net_init(&nt, "netg.decoder.", nz, 1, 1);
**   ganomaly_build_decoder(&nt, isize, nz, nc, ngf, extralayers);
**
** isize must be a power of two from 16 up: the encoder halves the side down
** to 4 and the decoder doubles it from 4 back up. The detector itself is
** reached through ganomaly_ops (detector.h).
*/
#ifndef ANOM_GANOMALY_H
#define ANOM_GANOMALY_H

#include "../net.h"

/*
** Append the DCGAN encoder of samet-akcay/ganomaly lib/networks.py to nt
** (input nc x isize x isize): Conv(4,2,first_pad) nc->ndf, LReLU 0.2; extra
** x [Conv(3,1,1), BN, LReLU]; while the side is over 4, Conv(4,2,1)
** doubling the channels, BN, LReLU; then Conv(4,1,0) -> nz (1x1). All
** convolutions bias-free, batch norm eps 1e-5. for_d 0: layers named
** "main.<module>" as the authors' encoders of NetG; for_d 1: NetD's,
** "features.<i>", then "classifier.0" (the last conv) and "classifier.1" (a
** sigmoid). first_pad is 1 for the authors' encoder; 4 builds anomalib's
** (its first conv pads by 4, the pyramid is counted from isize/2 all the
** same), whose last conv gives 1x1 only for isize >= 32: check the net's
** output shape.
*/
void ganomaly_build_encoder(net *nt, int isize, int nz, int nc, int ndf, int extra,
                            int for_d, int first_pad);

/*
** Append the matching decoder to nt (input nz x 1 x 1): ConvT(4,1,0) nz->C0
** (C0 = ngf * isize / 8), BN, ReLU; while the side is under isize/2,
** ConvT(4,2,1) halving the channels, BN, ReLU; extra x [Conv(3,1,1), BN,
** ReLU]; ConvT(4,2,1) -> nc, tanh. Layers named "main.<module>".
*/
void ganomaly_build_decoder(net *nt, int isize, int nz, int nc, int ngf, int extra);

#endif /* ANOM_GANOMALY_H */
