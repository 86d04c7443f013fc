// Bundled by esbuild (tests): loads a KHR_gaussian_splatting .glb with three.js's GLTFLoader and
// GLTFGaussianSplatLoaderExtension, renders it with three.js's GaussianSplat (WebGPURenderer on its
// WebGL2 backend) through a given pinhole camera.
import * as THREE from 'three/webgpu';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
import { GLTFGaussianSplatLoaderExtension } from 'three/examples/jsm/loaders/GLTFGaussianSplatLoaderExtension.js';

async function renderView(job) {
  const renderer = new THREE.WebGPURenderer({ antialias: false, forceWebGL: true, alpha: false });
  renderer.setPixelRatio(1);
  renderer.setSize(job.width, job.height);
  renderer.setClearColor(0x000000, 1);
  // srgb_rec709_display splats: their colours are display values already, written out unconverted
  renderer.outputColorSpace = THREE.LinearSRGBColorSpace;
  document.body.appendChild(renderer.domElement);
  await renderer.init();
  const loader = new GLTFLoader();
  loader.register((parser) => new GLTFGaussianSplatLoaderExtension(parser));
  const gltf = await loader.loadAsync(job.url);
  const scene = new THREE.Scene();
  scene.add(gltf.scene);
  let splats = 0;
  gltf.scene.traverse((obj) => { if (obj.isGaussianSplat) splats += 1; });
  const camera = new THREE.PerspectiveCamera(job.fovY, job.width / job.height, 0.01, 20);
  camera.matrixAutoUpdate = false;
  camera.matrix.fromArray(job.worldFromCamera);
  camera.matrixWorldNeedsUpdate = true;
  scene.updateMatrixWorld(true);
  camera.updateMatrixWorld(true);
  renderer.render(scene, camera);
  renderer.render(scene, camera);  // the first frame sorts; draw again in the sorted order
  const png = renderer.domElement.toDataURL('image/png');
  renderer.domElement.remove();
  renderer.dispose();
  return { png, splatObjects: splats };
}

window.renderJobs = async (jobs) => {
  const out = [];
  for (const job of jobs) out.push(await renderView(job));
  return out;
};
window.pageReady = true;
