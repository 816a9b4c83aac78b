import numpy as np, time, sys
from scipy import ndimage
from cnnlab.data import spatial as sp
rng=np.random.default_rng(0)
def T(name,f,n=10):
  f(); t=time.perf_counter()
  for i in range(n): f()
  print(f"{name:14s} {(time.perf_counter()-t)/n*1e3:7.1f} ms")
img=rng.random((512,512,1)).astype(np.float32); m=(img[...,0]>0.5).astype(np.uint8)
T("field512",lambda: sp.elastic_field(rng,(512,512)))
T("elastic512",lambda: sp.elastic_deform(img,m,rng))
T("elastic512c",lambda: sp.elastic_deform(img,m,rng,order=3))
T("scale512",lambda: sp.random_scale(img,m,rng))
full=sp.SpatialAugment(flip_axes=(0,1),rot90_planes=((0,1),),scale_range=(0.8,1.2),elastic_prob=1.0)
T("chain512",lambda: sp.augment_pair(img,m,rng,full))
T("chain512>256",lambda: sp.augment_pair(img,m,rng,sp.SpatialAugment.from_options(dict(flip_axes=(0,1),rot90_planes=((0,1),),scale_range=(0.8,1.2),elastic_prob=1.0,crop_size=(256,256),crop_foreground_prob=.5))))
T("flipcrop512>256",lambda: sp.augment_pair(img,m,rng,sp.SpatialAugment(flip_axes=(0,1),rot90_planes=((0,1),),crop_size=(256,256))))
v=rng.random((64,64,64,1)).astype(np.float32); mv=(v[...,0]>0.5).astype(np.uint8)
T("field64^3",lambda: sp.elastic_field(rng,(64,64,64)))
T("elastic64^3",lambda: sp.elastic_deform(v,mv,rng))
T("chain64^3",lambda: sp.augment_pair(v,mv,rng,sp.SpatialAugment(flip_axes=(0,1,2),rot90_planes=((1,2),),scale_range=(0.8,1.2),elastic_prob=1.0)))
